import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react";
import { notifications } from "@mantine/notifications";
// tus-js-client is loaded at the first upload: the provider sits above every page.
import type { DetailedError, Upload } from "tus-js-client";
import { csrfHeaders } from "../lib/transport";
import { useInvalidate } from "./invalidate";
import { ImageService } from "../gen/quarry/v1/image_pb";
import { JobService } from "../gen/quarry/v1/job_pb";

export type UploadRequest = { file: File; pool: string; name: string; checksum: string; kind: "" | "iso" | "disk" };

export type UploadState =
  | { phase: "idle" }
  // from: what the node already held when this page resumed the upload
  // (0 for a new one); the rate counts what was sent since.
  | { phase: "sending"; name: string; sent: number; total: number; started: number; from: number }
  | { phase: "failed"; message: string };

/** The server's words for a refused tus request, else the client's. */
function uploadError(e: Error | DetailedError): string {
  const res = (e as DetailedError).originalResponse;
  const body = res?.getBody?.()?.trim();
  if (body) return body;
  return e.message.replace(/^tus: /, "");
}

type Uploads = {
  state: UploadState;
  start: (r: UploadRequest) => void;
  abort: () => void;
  /** Counts the uploads that finished, for a dialog to close on the next. */
  finished: number;
};

const UploadsContext = createContext<Uploads | null>(null);

/** The upload of this page (one at a time): its dialog opens and closes, it goes on. */
export function useUpload(): Uploads {
  const u = useContext(UploadsContext);
  if (!u) throw new Error("useUpload outside UploadsProvider");
  return u;
}

/**
 * UploadsProvider sends a file to /uploads/ with tus (resumable: a broken
 * connection or a reload with the same file resumes where the node's
 * copy ends). It sits above the pages, so an upload goes on while one
 * moves to another page (the Jobs page shows it like a download), and its
 * end is told by a toast wherever one is.
 */
export function UploadsProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<UploadState>({ phase: "idle" });
  const [finished, setFinished] = useState(0);
  const current = useRef<Upload | null>(null);
  const inv = useInvalidate();

  const start = useCallback(
    async (r: UploadRequest) => {
      const name = r.name || r.file.name;
      const metadata: Record<string, string> = { filename: name, pool: r.pool };
      if (r.kind) metadata.kind = r.kind;
      if (r.checksum) metadata.checksum = r.checksum;
      const started = Date.now();
      let from = 0;
      let known = false; // whether from is known: the first answer tells
      setState({ phase: "sending", name, sent: 0, total: r.file.size, started, from });
      let tus: typeof import("tus-js-client");
      try {
        tus = await import("tus-js-client");
      } catch (e) {
        setState({ phase: "failed", message: `The upload code did not load (${String(e)}): reload the page and try again.` });
        return;
      }
      const up = new tus.Upload(r.file, {
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
        // A HEAD as the first request resumes an upload this browser began
        // before (in another page, before a reload): it answers where the
        // node's copy ends. A later HEAD is a retry of this page's own.
        onAfterResponse: (req, res) => {
          // 423: the previous page's last write is still being stored; the
          // retry's answer tells.
          if (known || (req.getMethod() === "HEAD" && res.getStatus() === 423)) return;
          known = true;
          if (req.getMethod() !== "HEAD" || res.getStatus() !== 200) return;
          from = Number(res.getHeader("Upload-Offset")) || 0;
          setState({ phase: "sending", name, sent: from, total: r.file.size, started, from });
        },
        onProgress: (sent, total) => setState({ phase: "sending", name, sent, total, started, from }),
        onSuccess: () => {
          current.current = null;
          setState({ phase: "idle" });
          setFinished((n) => n + 1);
          // Long uploads end while one looks elsewhere: the toast stays a while.
          notifications.show({ color: "green", title: "Upload finished", message: `${name} uploaded; the node verifies it now.`, autoClose: 15_000 });
          void inv(ImageService, JobService);
        },
        onError: (e) => {
          current.current = null;
          const message = uploadError(e);
          setState({ phase: "failed", message });
          notifications.show({ color: "red", title: `The upload of ${name} failed`, message, autoClose: 15_000 });
          void inv(ImageService, JobService);
        },
      });
      current.current = up;
      const prev = await up.findPreviousUploads();
      if (prev.length) up.resumeFromPreviousUpload(prev[0]);
      up.start();
    },
    [inv],
  );

  const abort = useCallback(() => {
    void current.current?.abort(true);
    current.current = null;
    setState({ phase: "idle" });
  }, []);

  const value = useMemo(() => ({ state, start, abort, finished }), [state, start, abort, finished]);
  return <UploadsContext.Provider value={value}>{children}</UploadsContext.Provider>;
}
