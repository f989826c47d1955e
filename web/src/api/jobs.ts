import { useEffect } from "react";
import { useQueryClient, keepPreviousData, skipToken } from "@tanstack/react-query";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { useMutation, useQuery, useTransport } from "@connectrpc/connect-query";
import { JobService, ListJobsRequestSchema } from "../gen/quarry/v1/job_pb";
import { ImageService } from "../gen/quarry/v1/image_pb";
import { putJob } from "../lib/jobcache";
import { useInvalidate } from "./invalidate";

export type JobsRequest = MessageInitShape<typeof ListJobsRequestSchema>;

/** One page of jobs, newest first (the first, of the server's default size, by default). */
export function useJobs(req: JobsRequest = {}) {
  return useQuery(JobService.method.listJobs, req, { placeholderData: keepPreviousData });
}

export function useJob(id: string | undefined) {
  return useQuery(JobService.method.getJob, id ? { id } : skipToken, { retry: false });
}

export function useCancelJob() {
  const inv = useInvalidate();
  return useMutation(JobService.method.cancelJob, { onSuccess: () => inv(JobService, ImageService) });
}

/**
 * useWatchJob follows one running job through its WatchJob stream and
 * writes each update into the cache, so its row and detail move live.
 * The stream ends by itself when the job does.
 */
export function useWatchJob(id: string | undefined, enabled: boolean) {
  const qc = useQueryClient();
  const transport = useTransport();
  useEffect(() => {
    if (!id || !enabled) return;
    const abort = new AbortController();
    const client = createClient(JobService, transport);
    (async () => {
      try {
        for await (const msg of client.watchJob({ id }, { signal: abort.signal })) {
          if (msg.job && !putJob(qc, msg.job)) {
            void qc.invalidateQueries({ queryKey: ["connect-query", { serviceName: JobService.typeName }] });
          }
        }
      } catch {
        // The event stream still carries the job's progress.
      }
    })();
    return () => abort.abort();
  }, [id, enabled, qc, transport]);
}
