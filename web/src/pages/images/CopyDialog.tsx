import { useEffect, useState } from "react";
import { Anchor, Button, Group, Modal, Select, Stack, Text, TextInput } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link } from "react-router-dom";
import { useCopyImage } from "../../api/images";
import { usePools, poolOptions } from "../../api/pools";
import type { Image } from "../../gen/quarry/v1/image_pb";
import { ErrorAlert } from "../../components/ErrorAlert";

/** Copies a READY image into another pool (or under another name). */
export function CopyDialog({ image, onClose }: { image: Image | null; onClose: () => void }) {
  const pools = usePools();
  const copy = useCopyImage();
  const [poolId, setPoolId] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState("");

  useEffect(() => {
    if (!image) return;
    copy.reset();
    setPoolId("");
    setName(image.name);
    setError("");
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [image?.id]);

  const options = poolOptions(pools.data?.pools);

  function submit(e: React.FormEvent) {
    e.preventDefault();
    if (!image) return;
    const n = name.trim();
    if (!poolId) return setError("Choose a pool.");
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(n)) return setError("Letters, digits, dot, dash and underscore; start with a letter or digit.");
    if (poolId === image.storagePoolId && n === image.name) return setError("The image is already in this pool under that name: choose another pool or name.");
    setError("");
    copy.mutate(
      { imageId: image.id, storagePoolId: poolId, name: n },
      {
        onSuccess: (res) => {
          notifications.show({
            color: "green",
            title: res.existing ? "Already copying" : "Copy started",
            message: (
              <>
                {res.image?.name} into {res.image?.storagePoolName}.{" "}
                {res.job && (
                  <Anchor component={Link} to={`/jobs/${res.job.id}`} size="sm">
                    Follow the copy
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
    <Modal opened={!!image} onClose={onClose} title="Copy to pool" size="lg">
      <form onSubmit={submit} noValidate>
        <Stack>
          <Text size="sm">
            Copies <b>{image?.name}</b> from pool <b>{image?.storagePoolName}</b> through the nodes, never from the internet:
            locally on a node that mounts both pools, otherwise node to node over mutual TLS. The copy is verified against
            the image's digest.
          </Text>
          <Select
            label="Target pool"
            placeholder="Choose a pool"
            data={options}
            value={poolId || null}
            onChange={(v) => setPoolId(v ?? "")}
            error={!poolId ? error : undefined}
            allowDeselect={false}
          />
          <TextInput
            label="Name"
            description="Default: the image's name."
            value={name}
            onChange={(e) => setName(e.currentTarget.value)}
            error={poolId ? error : undefined}
          />
          <ErrorAlert error={copy.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={copy.isPending}>
              Start copy
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
