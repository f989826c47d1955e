import { useEffect, useState } from "react";
import { Anchor, Button, Group, Modal, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link } from "react-router-dom";
import { useConvertImage } from "../../api/images";
import type { Image } from "../../gen/quarry/v1/image_pb";
import { ErrorAlert } from "../../components/ErrorAlert";

/** The formats an image of this format converts to (see ImageService/ConvertImage). */
export function convertTargets(format: string): string[] {
  switch (format) {
    case "qcow2":
      return ["raw"];
    case "raw":
    case "vmdk":
    case "vhdx":
      return ["qcow2"];
  }
  return [];
}

export function ConvertDialog({ image, onClose }: { image?: Image; onClose: () => void }) {
  const convert = useConvertImage();
  const targets = convertTargets(image?.format ?? "");
  const [format, setFormat] = useState("");
  const [name, setName] = useState("");
  useEffect(() => {
    setFormat(targets[0] ?? "");
    setName("");
    convert.reset();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [image?.id]);

  function submit(e: React.FormEvent) {
    e.preventDefault();
    if (!image) return;
    convert.mutate(
      { id: image.id, format, name: name.trim() },
      {
        onSuccess: (res) => {
          notifications.show({
            color: "green",
            title: "Conversion started",
            message: (
              <>
                {res.image?.name} in {res.image?.storagePoolName}.{" "}
                {res.job && (
                  <Anchor component={Link} to={`/jobs/${res.job.id}`} size="sm">
                    Follow the job
                  </Anchor>
                )}
              </>
            ),
          });
          onClose();
        },
      },
    );
  }

  return (
    <Modal opened={!!image} onClose={onClose} title={`Convert ${image?.name ?? ""}`}>
      <form onSubmit={submit} noValidate>
        <Stack>
          <Text size="sm">
            A node of the pool that has qemu-img writes a new image in the chosen format next to this one; this image is not
            changed.
          </Text>
          <Select
            label="Target format"
            data={targets}
            value={format || null}
            onChange={(v) => setFormat(v ?? "")}
            allowDeselect={false}
          />
          <TextInput
            label="Name"
            description="Optional; default: this image's name with the format's extension."
            value={name}
            onChange={(e) => setName(e.currentTarget.value)}
          />
          <ErrorAlert error={convert.error} title="Conversion refused" />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={convert.isPending} disabled={!format}>
              Convert
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
