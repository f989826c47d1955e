import { useState } from "react";
import { Anchor, Button, Drawer, Group, Loader, Stack, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link } from "react-router-dom";
import { useImage, useVerifyImage } from "../../api/images";
import { useJobs } from "../../api/jobs";
import { ImageState, type Image } from "../../gen/quarry/v1/image_pb";
import { Fields } from "../../components/Fields";
import { StateBadge } from "../../components/StateBadge";
import { Bytes } from "../../components/Bytes";
import { RelativeTime } from "../../components/RelativeTime";
import { ErrorAlert } from "../../components/ErrorAlert";
import { useCan } from "../../lib/session";
import { enumLabel } from "../../lib/format";
import { imageKindName, imageStateName, jobStateName, osLabel } from "../../lib/labels";
import { errorMessage } from "../../lib/errors";
import { CopyDialog } from "./CopyDialog";
import { ConvertDialog, convertTargets } from "./ConvertDialog";

export function ImageDrawer({ id, onClose, onDelete }: { id?: string; onClose: () => void; onDelete: (i: Image) => void }) {
  const q = useImage(id);
  const jobs = useJobs({ imageId: id ?? "" });
  const verify = useVerifyImage();
  const canOperate = useCan("operator");
  const [copying, setCopying] = useState<Image | null>(null);
  const [converting, setConverting] = useState<Image>();
  const img = q.data?.image;
  const related = (jobs.data?.jobs ?? []).filter((j) => j.imageId === id);

  return (
    <Drawer opened={!!id} onClose={onClose} position="right" size="lg" title={img ? img.name : "Image"}>
      {q.isLoading && <Loader aria-label="Loading" />}
      <ErrorAlert error={q.error} title="Could not load the image" />
      {img && (
        <Stack>
          <Fields
            label="Image details"
            rows={[
              ["State", <StateBadge name={imageStateName(img.state)} />],
              ["Why", img.stateReason],
              ["Kind", enumLabel(imageKindName(img.kind))],
              ["Pool", <Anchor component={Link} to="/pools">{img.storagePoolName}</Anchor>],
              ["Path", <code>{img.path}</code>],
              ["Format", img.format],
              ["Size", <Bytes value={img.sizeBytes} />],
              ["Virtual size", <Bytes value={img.virtualSizeBytes} />],
              ["OS guess", osLabel(img.os)],
              ["Volume label", img.volumeLabel],
              ["Bootable", img.bootable ? "Yes (El Torito)" : "No"],
              ["Digest", img.digest && <code>{img.digest}</code>],
              ["Verified", img.verified ? "Yes: matched an expected checksum" : "No"],
              ["Origin", img.origin],
              ["Created", <RelativeTime value={img.createdAt} />],
              ["Updated", <RelativeTime value={img.updatedAt} />],
              ["File modified", <RelativeTime value={img.modifiedAt} />],
              ["Missing since", img.missingSince ? <RelativeTime value={img.missingSince} /> : ""],
              ["Id", <code>{img.id}</code>],
            ]}
          />
          <Title order={3} size="h5">
            History
          </Title>
          {related.length === 0 ? (
            <Text size="sm" c="dimmed">
              No job worked on this image{img.origin === "discovered" ? ": it was discovered in the pool." : "."}
            </Text>
          ) : (
            related.map((j) => (
              <Text size="sm" key={j.id}>
                <Anchor component={Link} to={`/jobs/${j.id}`}>
                  {j.kind} job
                </Anchor>{" "}
                {enumLabel(jobStateName(j.state))} · <RelativeTime value={j.createdAt} /> · {j.source}
                {j.message && ` — ${j.message}`}
              </Text>
            ))
          )}
          {canOperate && (
            <Group>
              <Button
                variant="default"
                loading={verify.isPending}
                onClick={() =>
                  verify.mutate(
                    { id: img.id },
                    {
                      onSuccess: (r) =>
                        notifications.show({ message: r.existing ? "A verify job is already running" : "Verify job started" }),
                      onError: (e) => notifications.show({ color: "red", title: "Verify refused", message: errorMessage(e) }),
                    },
                  )
                }
              >
                Verify
              </Button>
              {img.state === ImageState.READY && img.digest && (
                <Button variant="default" onClick={() => setCopying(img)}>
                  Copy to pool…
                </Button>
              )}
              {img.state === ImageState.READY && convertTargets(img.format).length > 0 && (
                <Button variant="default" onClick={() => setConverting(img)}>
                  Convert…
                </Button>
              )}
              <Button color="red" variant="light" onClick={() => onDelete(img)}>
                Delete…
              </Button>
            </Group>
          )}
        </Stack>
      )}
      <CopyDialog image={copying} onClose={() => setCopying(null)} />
      <ConvertDialog image={converting} onClose={() => setConverting(undefined)} />
    </Drawer>
  );
}
