import { useEffect, useState } from "react";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** toDate: a protobuf Timestamp as a Date; undefined when unset. */
export function toDate(ts: Timestamp | undefined): Date | undefined {
  if (!ts || (ts.seconds === 0n && ts.nanos === 0)) return undefined;
  return timestampDate(ts);
}

let now = new Date();
const subs = new Set<(d: Date) => void>();
let timer: ReturnType<typeof setInterval> | undefined;

/** useNow: the current time, shared by every relative time, every 15 s. */
export function useNow(): Date {
  const [d, setD] = useState(now);
  useEffect(() => {
    subs.add(setD);
    if (!timer)
      timer = setInterval(() => {
        now = new Date();
        for (const s of subs) s(now);
      }, 15_000);
    return () => {
      subs.delete(setD);
      if (subs.size === 0 && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    };
  }, []);
  return d > now ? d : now;
}
