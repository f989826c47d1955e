import { useEffect, useState } from "react";
import { useQueryClient, type QueryClient } from "@tanstack/react-query";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectQueryKey, useTransport } from "@connectrpc/connect-query";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { EventService, Resource, type Event } from "../gen/quarry/v1/event_pb";
import { NodeService } from "../gen/quarry/v1/node_pb";
import { StoragePoolService } from "../gen/quarry/v1/pool_pb";
import { ImageService } from "../gen/quarry/v1/image_pb";
import { JobService } from "../gen/quarry/v1/job_pb";
import { AuditService, TokenService } from "../gen/quarry/v1/auth_pb";
import { isTerminal, putJob } from "./jobcache";
import { reportSessionEnded } from "./transport";

export type LiveStatus = "connecting" | "live" | "offline";

type Target = DescService | DescMethod;

/** What to refetch when a resource changes; jobs are written directly. */
export function targetsFor(ev: Event): Target[] {
  switch (ev.resource) {
    case Resource.NODE:
      return [NodeService, StoragePoolService];
    case Resource.POOL:
      return [StoragePoolService, NodeService, ImageService.method.getScanStatus];
    case Resource.IMAGE:
      return [ImageService.method.listImages, ImageService.method.getImage, ImageService.method.getCatalogStatus];
    case Resource.SCAN:
      return [ImageService.method.getScanStatus];
    case Resource.TOKEN:
      return [TokenService];
    case Resource.AUDIT:
      return [AuditService];
    case Resource.JOB:
      return [];
    default:
      return [];
  }
}

function keyFor(t: Target) {
  return t.kind === "service"
    ? createConnectQueryKey({ schema: t, cardinality: undefined })
    : createConnectQueryKey({ schema: t as DescMethod & { methodKind: "unary" }, cardinality: undefined });
}

/** applyEvents updates the query cache for one message of the stream. */
export function applyEvents(qc: QueryClient, events: Event[]) {
  const targets = new Set<Target>();
  for (const ev of events) {
    for (const t of targetsFor(ev)) targets.add(t);
    if (ev.resource === Resource.JOB) {
      if (ev.job && putJob(qc, ev.job)) {
        if (isTerminal(ev.job.state)) {
          targets.add(ImageService.method.listImages);
          targets.add(ImageService.method.getImage);
          targets.add(ImageService.method.getCatalogStatus);
        }
      } else {
        targets.add(JobService);
      }
    }
  }
  for (const t of targets) void qc.invalidateQueries({ queryKey: keyFor(t) });
}

/**
 * useLiveUpdates keeps one EventService/Watch stream open while the
 * dashboard is signed in and feeds it into the query cache. After every
 * (re)connection, once the server says it is ready, everything shown is
 * refetched: nothing that happened while disconnected is lost.
 */
export function useLiveUpdates(): LiveStatus {
  const qc = useQueryClient();
  const transport = useTransport();
  const [status, setStatus] = useState<LiveStatus>("connecting");

  useEffect(() => {
    const client = createClient(EventService, transport);
    const abort = new AbortController();
    let delay = 500;
    let connectedOnce = false;
    (async () => {
      while (!abort.signal.aborted) {
        try {
          for await (const msg of client.watch({}, { signal: abort.signal })) {
            if (msg.ready) {
              setStatus("live");
              delay = 500;
              if (connectedOnce) void qc.invalidateQueries();
              connectedOnce = true;
            }
            if (msg.events.length) applyEvents(qc, msg.events);
          }
        } catch (e) {
          if (abort.signal.aborted) return;
          const err = ConnectError.from(e);
          if (err.code === Code.Unauthenticated) {
            reportSessionEnded(err.rawMessage);
            return;
          }
        }
        if (abort.signal.aborted) return;
        setStatus(connectedOnce ? "connecting" : "offline");
        connectedOnce = true; // refetch after any gap, even a first failure
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })();
    return () => abort.abort();
  }, [qc, transport]);

  return status;
}
