import { useEffect, useState } from "react";
import { Alert, Button, FileInput, Group, Modal, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { usePools, mountedOn } from "../../api/pools";
import { useUpload } from "../../api/uploads";
import { ProgressBar } from "../../components/ProgressBar";
import { formatRate } from "../../lib/format";
import { validateDownload } from "./DownloadDialog";

/** Upload a file from this computer into a pool (tus, resumable). */
export function UploadDialog({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const pools = usePools();
  const { state, start, abort, reset } = useUpload();
  const [file, setFile] = useState<File | null>(null);
  const [poolId, setPoolId] = useState("");
  const [name, setName] = useState("");
  const [checksum, setChecksum] = useState("");
  const [kind, setKind] = useState<"" | "iso" | "disk">("");
  const [errors, setErrors] = useState<Record<string, string>>({});

  const poolOptions = (pools.data?.pools ?? []).map((p) => {
    const on = mountedOn(p);
    return { value: p.id, label: `${p.name} — ${on.length ? `mounted on ${on.join(", ")}` : "no node mounts it"}`, disabled: on.length === 0 };
  });
  useEffect(() => {
    if (opened && !poolId) {
      const first = poolOptions.find((o) => !o.disabled);
      if (first) setPoolId(first.value);
    }
  }, [opened, poolId, poolOptions]);
  useEffect(() => {
    if (state.phase === "done") {
      notifications.show({ color: "green", title: "Upload finished", message: `${name || file?.name} uploaded; the node verifies it now.` });
      reset();
      setFile(null);
      setName("");
      setChecksum("");
      onClose();
    }
  }, [state.phase, name, file, reset, onClose]);

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

  const sending = state.phase === "sending";
  return (
    <Modal opened={opened} onClose={onClose} title="Upload an image" size="lg">
      <form onSubmit={submit} noValidate>
        <Stack>
          <FileInput
            label="File"
            placeholder="An ISO, a qcow2, a raw disk…"
            value={file}
            onChange={(f) => {
              setFile(f);
              if (f && !name) setName(f.name);
            }}
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
              <ProgressBar done={BigInt(state.sent)} total={BigInt(state.total)} label={`Upload of ${name || file?.name}`} />
              <Text size="xs" c="dimmed">
                {formatRate((state.sent / Math.max(1, Date.now() - state.started)) * 1000)}. Closing this dialog keeps the upload going; a
                broken connection resumes.
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
        </Stack>
      </form>
    </Modal>
  );
}
