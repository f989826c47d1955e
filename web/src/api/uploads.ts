import { useCallback, useRef, useState } from "react";
import { Upload, type DetailedError } from "tus-js-client";
import { csrfHeaders } from "../lib/transport";
import { useInvalidate } from "./invalidate";
import { ImageService } from "../gen/quarry/v1/image_pb";
import { JobService } from "../gen/quarry/v1/job_pb";

export type UploadRequest = { file: File; pool: string; name: string; checksum: string; kind: "" | "iso" | "disk" };

export type UploadState =
  | { phase: "idle" }
  | { phase: "sending"; sent: number; total: number; started: number }
  | { phase: "done"; total: number }
  | { phase: "failed"; message: string };

/** The server's words for a refused tus request, else the client's. */
function uploadError(e: Error | DetailedError): string {
  const res = (e as DetailedError).originalResponse;
  const body = res?.getBody?.()?.trim();
  if (body) return body;
  return e.message.replace(/^tus: /, "");
}

/**
 * useUpload sends a file to /uploads/ with tus (resumable: a broken
 * connection or a reload with the same file resumes where the node's
 * copy ends). The job it creates shows on the Jobs page like a download.
 */
export function useUpload() {
  const [state, setState] = useState<UploadState>({ phase: "idle" });
  const current = useRef<Upload | null>(null);
  const inv = useInvalidate();

  const start = useCallback(
    (r: UploadRequest) => {
      const metadata: Record<string, string> = { filename: r.name || r.file.name, pool: r.pool };
      if (r.kind) metadata.kind = r.kind;
      if (r.checksum) metadata.checksum = r.checksum;
      const started = Date.now();
      setState({ phase: "sending", sent: 0, total: r.file.size, started });
      const up = new Upload(r.file, {
        endpoint: "/uploads/",
        metadata,
        headers: csrfHeaders(),
        chunkSize: 64 * 1024 * 1024,
        retryDelays: [0, 1000, 3000, 5000, 10000],
        removeFingerprintOnSuccess: true,
        // Client errors (a refused name, a full pool) will not get better.
        onShouldRetry: (err) => {
          const s = (err as DetailedError).originalResponse?.getStatus?.() ?? 0;
          return s === 0 || s === 409 || s === 423 || s >= 500;
        },
        onProgress: (sent, total) => setState({ phase: "sending", sent, total, started }),
        onSuccess: () => {
          setState({ phase: "done", total: r.file.size });
          void inv(ImageService, JobService);
        },
        onError: (e) => {
          setState({ phase: "failed", message: uploadError(e) });
          void inv(ImageService, JobService);
        },
      });
      current.current = up;
      up.findPreviousUploads().then((prev) => {
        if (prev.length) up.resumeFromPreviousUpload(prev[0]);
        up.start();
      });
    },
    [inv],
  );

  const abort = useCallback(() => {
    void current.current?.abort(true);
    current.current = null;
    setState({ phase: "idle" });
  }, []);

  const reset = useCallback(() => setState({ phase: "idle" }), []);
  return { state, start, abort, reset };
}
