import { useMemo, useState } from "react";
import { Anchor, Button, Drawer, Group, Select, Stack, Text, TextInput, Title, Timeline } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useCancelJob, useJob, useJobs, useWatchJob } from "../../api/jobs";
import { useImages } from "../../api/images";
import { JobState, type Job } from "../../gen/quarry/v1/job_pb";
import { DataTable, type Column } from "../../components/DataTable";
import { StateBadge } from "../../components/StateBadge";
import { ProgressBar } from "../../components/ProgressBar";
import { RelativeTime } from "../../components/RelativeTime";
import { EmptyState } from "../../components/EmptyState";
import { Pager } from "../../components/Pager";
import { usePageTokens } from "../../lib/pages";
import { ErrorAlert } from "../../components/ErrorAlert";
import { PageHeader } from "../../components/PageHeader";
import { ConfirmDialog } from "../../components/ConfirmDialog";
import { Fields } from "../../components/Fields";
import { Bytes } from "../../components/Bytes";
import { useCan } from "../../lib/session";
import { enumLabel, formatEta, formatRate } from "../../lib/format";
import { matchesSearch } from "../../lib/table";
import { enumOptions, jobStateName, sourceName } from "../../lib/labels";
import { isTerminal } from "../../lib/jobcache";
import { toDate } from "../../lib/time";

// Browsers open at most 6 HTTP/1.1 connections per server: the event
// stream is one; at most this many running jobs get their own WatchJob
// stream, the others move with the event stream's job updates.
const maxWatched = 3;

function JobWatcher({ id }: { id: string }) {
  useWatchJob(id, true);
  return null;
}

export function JobProgress({ job }: { job: Job }) {
  const p = job.progress;
  if (!p) return <span>—</span>;
  if (job.state === JobState.QUEUED) return <Text size="sm">Waiting</Text>;
  return (
    <ProgressBar
      done={p.bytesDone}
      total={p.bytesTotal}
      label={`Progress of ${sourceName(job.source) || job.id}`}
      active={job.state === JobState.RUNNING}
    />
  );
}

function ImageLink({ job, names }: { job: Job; names: Map<string, string> }) {
  if (!job.imageId) return <span>—</span>;
  const name = names.get(job.imageId);
  if (job.state === JobState.SUCCEEDED || name)
    return (
      <Anchor component={Link} to={`/images/${job.imageId}`}>
        {name ?? "Open image"}
      </Anchor>
    );
  return <span>—</span>;
}

const jobsPageSize = 200;

export default function JobsPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  // Image names for the jobs' links: one page of the largest size.
  const images = useImages({ pageSize: 1000 });
  const canOperate = useCan("operator");
  const cancel = useCancelJob();
  const [query, setQuery] = useState("");
  const [state, setState] = useState<string | null>(null);
  // The state is filtered on the server, the search within the page shown.
  const pages = usePageTokens(state ?? "");
  const jobs = useJobs({ states: state ? [Number(state)] : [], pageSize: jobsPageSize, pageToken: pages.token });
  const [toCancel, setToCancel] = useState<Job | null>(null);

  const names = useMemo(() => new Map((images.data?.images ?? []).map((i) => [i.id, i.name])), [images.data]);
  const all = jobs.data?.jobs ?? [];
  const rows = all.filter(
    (j) => (!state || String(j.state) === state) && matchesSearch(query, [j.id, j.kind, j.source, j.nodeName, j.message, names.get(j.imageId)]),
  );
  const watched = all.filter((j) => j.state === JobState.RUNNING).slice(0, maxWatched);

  const columns: Column<Job>[] = [
    {
      key: "source",
      header: "Source",
      sort: (j) => j.source,
      render: (j) => (
        <Anchor component={Link} to={`/jobs/${j.id}`} title={j.source}>
          {j.kind}: {sourceName(j.source) || j.id}
        </Anchor>
      ),
    },
    { key: "image", header: "Image", render: (j) => <ImageLink job={j} names={names} /> },
    { key: "state", header: "State", sort: (j) => jobStateName(j.state), render: (j) => <StateBadge name={jobStateName(j.state)} /> },
    { key: "node", header: "Node", sort: (j) => j.nodeName, render: (j) => j.nodeName || "—" },
    { key: "progress", header: "Progress", sort: (j) => j.progress?.bytesDone, render: (j) => <JobProgress job={j} /> },
    { key: "rate", header: "Rate", render: (j) => (j.state === JobState.RUNNING ? formatRate(j.progress?.bytesPerSecond) : "—") },
    { key: "eta", header: "ETA", render: (j) => (j.state === JobState.RUNNING ? formatEta(j.progress?.etaSeconds) : "—") },
    { key: "phase", header: "Phase", render: (j) => j.progress?.phase || "—" },
    {
      key: "message",
      header: "Message",
      render: (j) => (
        <Text size="sm" title={j.message} style={{ maxWidth: 320, overflow: "hidden", textOverflow: "ellipsis" }}>
          {j.message || "—"}
        </Text>
      ),
    },
    { key: "created", header: "Created", sort: (j) => toDate(j.createdAt)?.getTime(), render: (j) => <RelativeTime value={j.createdAt} /> },
  ];
  if (canOperate)
    columns.push({
      key: "actions",
      header: "Actions",
      render: (j) =>
        isTerminal(j.state) ? null : (
          <Button size="compact-xs" variant="subtle" color="red" aria-label={`Cancel job ${sourceName(j.source)}`} onClick={() => setToCancel(j)}>
            Cancel
          </Button>
        ),
    });

  return (
    <>
      {watched.map((j) => (
        <JobWatcher key={j.id} id={j.id} />
      ))}
      <PageHeader title="Jobs" />
      <Stack>
        <Group gap="sm" align="flex-end" wrap="wrap">
          <TextInput label="Search" placeholder="Source, node, message…" value={query} onChange={(e) => setQuery(e.currentTarget.value)} style={{ flex: "1 1 220px" }} />
          <Select label="State" placeholder="All states" clearable data={enumOptions(JobState)} value={state} onChange={setState} w={160} />
        </Group>
        <ErrorAlert error={jobs.error} title="Could not list jobs" />
        {jobs.isSuccess && all.length === 0 && !state && pages.page === 1 ? (
          <EmptyState title="No jobs yet">
            Downloads and verifications show up here with their progress. Start one from the{" "}
            <Anchor component={Link} to="/images">Images</Anchor> or <Anchor component={Link} to="/catalog">Catalog</Anchor> page.
          </EmptyState>
        ) : jobs.isSuccess && rows.length === 0 ? (
          <EmptyState title="No job matches">Clear the search or the state filter.</EmptyState>
        ) : (
          <DataTable label="Jobs" rows={rows} columns={columns} rowKey={(j) => j.id} defaultSort={{ key: "created", dir: "desc" }} rowLabel={(j) => `${j.kind} ${j.source}`} />
        )}
        <Pager label="Job pages" pages={pages} nextToken={jobs.data?.nextPageToken}>
          up to {jobsPageSize} jobs a page, newest first; the search looks in this page
        </Pager>
      </Stack>
      <JobDrawer id={id} onClose={() => navigate("/jobs")} names={names} onCancel={canOperate ? setToCancel : undefined} />
      <ConfirmDialog
        opened={!!toCancel}
        title="Cancel job"
        confirmLabel="Cancel job"
        loading={cancel.isPending}
        error={cancel.error}
        onClose={() => {
          setToCancel(null);
          cancel.reset();
        }}
        onConfirm={() =>
          toCancel &&
          cancel.mutate(
            { id: toCancel.id },
            {
              onSuccess: () => {
                notifications.show({ message: "Job cancelled" });
                setToCancel(null);
              },
            },
          )
        }
      >
        Cancel the {toCancel?.kind} of <b>{toCancel?.source}</b>? Its partial file is removed and its image deleted.
      </ConfirmDialog>
    </>
  );
}

function JobDrawer({ id, onClose, names, onCancel }: { id?: string; onClose: () => void; names: Map<string, string>; onCancel?: (j: Job) => void }) {
  const q = useJob(id);
  const job = q.data?.job;
  useWatchJob(id, !!job && !isTerminal(job.state));
  return (
    <Drawer opened={!!id} onClose={onClose} position="right" size="lg" title="Job">
      <ErrorAlert error={q.error} title="Could not load the job" />
      {job && (
        <Stack>
          <JobProgress job={job} />
          <Fields
            label="Job details"
            rows={[
              ["State", <StateBadge name={jobStateName(job.state)} />],
              ["Kind", job.kind],
              ["Source", job.source],
              ["Image", <ImageLink job={job} names={names} />],
              ["Node", job.nodeName],
              ["Phase", job.progress?.phase ?? ""],
              ["Done", <Bytes value={job.progress?.bytesDone} />],
              ["Total", <Bytes value={job.progress?.bytesTotal} />],
              ["Rate", formatRate(job.progress?.bytesPerSecond)],
              ["ETA", formatEta(job.progress?.etaSeconds)],
              ["Attempts", String(job.attempts)],
              ["Message", job.message],
              ["Created", <RelativeTime value={job.createdAt} />],
              ["Started", <RelativeTime value={job.startedAt} />],
              ["Finished", <RelativeTime value={job.finishedAt} />],
              ["Id", <code>{job.id}</code>],
            ]}
          />
          {onCancel && !isTerminal(job.state) && (
            <Group>
              <Button color="red" variant="light" onClick={() => onCancel(job)}>
                Cancel job…
              </Button>
            </Group>
          )}
          <Title order={3} size="h5">
            History
          </Title>
          <Timeline bulletSize={12} lineWidth={2}>
            {job.history.map((h, i) => (
              <Timeline.Item key={i} title={<RelativeTime value={h.time} />}>
                <Text size="sm">{h.message}</Text>
              </Timeline.Item>
            ))}
          </Timeline>
          <Text size="xs" c="dimmed">
            {enumLabel(jobStateName(job.state))}
          </Text>
        </Stack>
      )}
    </Drawer>
  );
}
