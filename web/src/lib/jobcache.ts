import type { QueryClient } from "@tanstack/react-query";
import { createConnectQueryKey } from "@connectrpc/connect-query";
import { JobService, JobState, type Job, type ListJobsResponse, type GetJobResponse } from "../gen/quarry/v1/job_pb";

const listJobsKey = createConnectQueryKey({ schema: JobService.method.listJobs, cardinality: undefined });

export function isTerminal(state: JobState): boolean {
  return state === JobState.SUCCEEDED || state === JobState.FAILED || state === JobState.CANCELLED;
}

/**
 * putJob writes a job as the server sent it into every cached job list
 * and its GetJob entry. Returns false when a list did not hold the job
 * (the caller refetches the lists then).
 */
export function putJob(qc: QueryClient, job: Job): boolean {
  let missing = false;
  qc.setQueriesData<ListJobsResponse>({ queryKey: listJobsKey }, (old) => {
    if (!old) return old;
    const i = old.jobs.findIndex((j) => j.id === job.id);
    if (i < 0) {
      missing = true;
      return old;
    }
    const jobs = old.jobs.slice();
    // Lists carry no history; keep whatever the list had.
    jobs[i] = { ...job, history: job.history.length ? job.history : old.jobs[i].history };
    return { ...old, jobs };
  });
  const getKey = createConnectQueryKey({
    schema: JobService.method.getJob,
    input: { id: job.id },
    cardinality: undefined,
  });
  qc.setQueriesData<GetJobResponse>({ queryKey: getKey }, (old) => {
    if (!old) return old;
    const history = job.history.length ? job.history : (old.job?.history ?? []);
    return { ...old, job: { ...job, history } };
  });
  return !missing;
}
