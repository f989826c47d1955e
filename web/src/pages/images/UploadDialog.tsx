import { useEffect, useRef, useState } from "react";
import { Alert, Button, FileInput, Group, Modal, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { usePoolChoice } from "../../api/pools";
import { useUpload } from "../../api/uploads";
import { ProgressBar } from "../../components/ProgressBar";
import { formatBytes, formatRate } from "../../lib/format";
import { validateDownload } from "./DownloadDialog";

/**
 * Upload a file from this computer into a pool (tus, resumable). dropped
 * is a file dropped on the page: it becomes the file to upload unless one
 * is being sent.
 */
export function UploadDialog({ opened, onClose, dropped }: { opened: boolean; onClose: () => void; dropped?: File | null }) {
  const { state, start, abort, finished } = useUpload();
  const [file, setFile] = useState<File | null>(null);
  const { options: poolOptions, poolId, setPoolId, none: noPool } = usePoolChoice(opened);
  const [name, setName] = useState("");
  const [checksum, setChecksum] = useState("");
  const [kind, setKind] = useState<"" | "iso" | "disk">("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const sending = state.phase === "sending";

  // A new file takes the name field too, unless a name of one's own was typed.
  function choose(f: File | null) {
    setFile(f);
    if (f && (!name || name === file?.name)) setName(f.name);
  }
  useEffect(() => {
    if (!dropped) return;
    if (sending) {
      notifications.show({ color: "yellow", title: "An upload is in progress", message: `Drop ${dropped.name} again once it has finished.` });
      return;
    }
    choose(dropped);
    // Only a new drop counts, not a change of what choose reads.
  }, [dropped]);

  // The upload finished (the provider's toast says so): the form empties
  // and the dialog closes.
  const seenFinished = useRef(finished);
  useEffect(() => {
    if (finished === seenFinished.current) return;
    seenFinished.current = finished;
    setFile(null);
    setName("");
    setChecksum("");
    onClose();
  }, [finished, onClose]);

  function submit(e: React.FormEvent) {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (!file) errs.file = "Choose a file.";
    const v = validateDownload({ source: "url", catalogId: "", url: "http://x", poolId, checksum, name });
    Object.assign(errs, v);
    setErrors(errs);
    if (Object.keys(errs).length || !file) return;
    start({ file, pool: poolId, name: name.trim(), checksum: checksum.trim(), kind });
  }

  return (
    <Modal opened={opened} onClose={onClose} title="Upload an image" size="lg">
      <form onSubmit={submit} noValidate>
        <Stack>
          <FileInput
            label="File"
            placeholder="An ISO, a qcow2, a raw disk…"
            value={file}
            onChange={choose}
            error={errors.file}
            disabled={sending}
            clearable
          />
          <Select label="Pool" data={poolOptions} value={poolId || null} onChange={(v) => setPoolId(v ?? "")} error={errors.poolId} allowDeselect={false} disabled={sending} />
          <TextInput label="Name" description="Default: the file's name." value={name} onChange={(e) => setName(e.currentTarget.value)} error={errors.name} disabled={sending} />
          <Select
            label="Kind"
            data={[
              { value: "", label: "From the file (ISO by content, else disk)" },
              { value: "iso", label: "ISO" },
              { value: "disk", label: "Disk" },
            ]}
            value={kind}
            onChange={(v) => setKind((v ?? "") as "" | "iso" | "disk")}
            allowDeselect={false}
            disabled={sending}
          />
          <TextInput
            label="Checksum"
            description="Optional: sha256:<hex> or sha512:<hex>; the node compares it with what it received."
            value={checksum}
            onChange={(e) => setChecksum(e.currentTarget.value)}
            error={errors.checksum}
            disabled={sending}
          />
          {sending && (
            <div>
              <ProgressBar done={BigInt(state.sent)} total={BigInt(state.total)} label={`Upload of ${state.name}`} />
              <Text size="xs" c="dimmed">
                {state.from > 0 && `Resumed: ${formatBytes(state.from)} were already on the node. `}
                {formatRate(((state.sent - state.from) / Math.max(1, Date.now() - state.started)) * 1000)}. Closing this dialog keeps the
                upload going; a broken connection resumes, and so does the same file chosen again after a reload.
              </Text>
            </div>
          )}
          {state.phase === "failed" && (
            <Alert color="red" title="The upload failed" role="alert">
              {state.message}
            </Alert>
          )}
          <Group justify="flex-end">
            {sending ? (
              <Button variant="default" color="red" onClick={abort}>
                Stop upload
              </Button>
            ) : (
              <Button variant="default" onClick={onClose}>
                Cancel
              </Button>
            )}
            <Button type="submit" loading={sending}>
              Upload
            </Button>
          </Group>
          {noPool && (
            <Text size="sm" c="red">
              No pool is mounted on any node: check the Pools page.
            </Text>
          )}
        </Stack>
      </form>
    </Modal>
  );
}
