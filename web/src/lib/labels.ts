import { ImageKind, ImageState, type Image, type OSInfo } from "../gen/quarry/v1/image_pb";
import { JobState } from "../gen/quarry/v1/job_pb";
import { NodeState } from "../gen/quarry/v1/node_pb";
import { Role, TokenKind } from "../gen/quarry/v1/auth_pb";
import { enumLabel } from "./format";

export const imageKindName = (k: ImageKind) => ImageKind[k];
export const imageStateName = (s: ImageState) => ImageState[s];
export const jobStateName = (s: JobState) => JobState[s];
export const nodeStateName = (s: NodeState) => NodeState[s];
export const roleLabel = (r: Role) => enumLabel(Role[r]);
const tokenKindLabels: Partial<Record<TokenKind, string>> = { [TokenKind.API]: "API", [TokenKind.JOIN]: "Join", [TokenKind.SSO]: "SSO" };
export const tokenKindLabel = (k: TokenKind) => tokenKindLabels[k] ?? "—";
/** Whether tokens of kind k carry a role (join tokens only enroll agents). */
export const tokenHasRole = (k: TokenKind) => k === TokenKind.API || k === TokenKind.SSO;

export function osLabel(os: OSInfo | undefined): string {
  if (!os || !os.distro) return "";
  return [os.distro, os.version, os.arch].filter(Boolean).join(" ");
}

/** Select options for an enum, without UNSPECIFIED. */
export function enumOptions(e: Record<string, string | number>): { value: string; label: string }[] {
  return Object.entries(e)
    .filter(([k, v]) => typeof v === "number" && v !== 0 && isNaN(Number(k)))
    .map(([k, v]) => ({ value: String(v), label: enumLabel(k) }));
}

export function imageSearchFields(i: Image): string[] {
  return [i.name, i.path, i.storagePoolName, i.volumeLabel, osLabel(i.os), i.digest, i.format, i.id];
}

/** sourceName("http://h/a/b.img?x=1") → "b.img": a job's source as people name it. */
export function sourceName(source: string): string {
  try {
    const u = new URL(source);
    return decodeURIComponent(u.pathname.split("/").pop() || u.host);
  } catch {
    return source.split("/").pop() || source;
  }
}
