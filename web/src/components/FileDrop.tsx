import { useEffect, useRef, useState } from "react";
import { Overlay, Paper, Stack, Text, Title } from "@mantine/core";

/** Whether a drag carries files from the computer (not text or a link from the page). */
function carriesFiles(e: DragEvent): boolean {
  return !!e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
}

/**
 * FileDrop takes a file dropped anywhere on the window while it is shown:
 * a drag of files shows what dropping does, and a drop hands the files to
 * onDrop. A file dropped on the page is never opened by the browser in
 * place of the dashboard, even when onDrop refuses it.
 */
export function FileDrop({ title, hint, onDrop }: { title: string; hint: string; onDrop: (files: File[]) => void }) {
  const [over, setOver] = useState(false);
  // dragenter and dragleave fire for every element crossed; the drag is
  // over the window while more have been entered than left.
  const depth = useRef(0);
  const latest = useRef(onDrop);
  latest.current = onDrop;

  useEffect(() => {
    const enter = (e: DragEvent) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth.current++;
      setOver(true);
    };
    const move = (e: DragEvent) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      e.dataTransfer!.dropEffect = "copy";
    };
    const leave = (e: DragEvent) => {
      if (!carriesFiles(e)) return;
      depth.current = Math.max(0, depth.current - 1);
      if (depth.current === 0) setOver(false);
    };
    const drop = (e: DragEvent) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth.current = 0;
      setOver(false);
      const files = Array.from(e.dataTransfer!.files);
      if (files.length) latest.current(files);
    };
    window.addEventListener("dragenter", enter);
    window.addEventListener("dragover", move);
    window.addEventListener("dragleave", leave);
    window.addEventListener("drop", drop);
    return () => {
      window.removeEventListener("dragenter", enter);
      window.removeEventListener("dragover", move);
      window.removeEventListener("dragleave", leave);
      window.removeEventListener("drop", drop);
    };
  }, []);

  if (!over) return null;
  return (
    <Overlay fixed blur={2} backgroundOpacity={0.35} zIndex={1000} center>
      <Paper withBorder shadow="md" p="xl" radius="md" role="status" aria-label={title} style={{ borderStyle: "dashed", borderWidth: 2 }}>
        <Stack gap={4} align="center">
          <Title order={2} size="h4">
            {title}
          </Title>
          <Text c="dimmed">{hint}</Text>
        </Stack>
      </Paper>
    </Overlay>
  );
}
