import { useMutation, useQuery } from "@connectrpc/connect-query";
import { keepPreviousData, skipToken } from "@tanstack/react-query";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ImageService, ListImagesRequestSchema } from "../gen/quarry/v1/image_pb";
import { JobService } from "../gen/quarry/v1/job_pb";
import { useInvalidate } from "./invalidate";

export type ImagesRequest = MessageInitShape<typeof ListImagesRequestSchema>;

/** One page of images (the first, of the server's default size, by default). */
export function useImages(req: ImagesRequest = {}) {
  return useQuery(ImageService.method.listImages, req, { placeholderData: keepPreviousData });
}
export function useImage(id: string | undefined) {
  return useQuery(ImageService.method.getImage, id ? { id } : skipToken, { retry: false });
}

export function useCatalog() {
  return useQuery(ImageService.method.listCatalog, {}, { staleTime: 5 * 60_000 });
}

/** Scan status; polled only while a scan this page started is running. */
export function useScanStatus(pollWhileScanning = false) {
  return useQuery(ImageService.method.getScanStatus, {}, { refetchInterval: pollWhileScanning ? 400 : false });
}

/**
 * Per catalog entry and pool: the current build, the last and next check
 * for a new one. Builds arriving or going are image events; checks write
 * none, so the status is refetched every 30 s, and every second while
 * `watching` (a check was asked for, or a new build is downloading).
 */
export function useCatalogStatus(watching = false) {
  return useQuery(ImageService.method.getCatalogStatus, {}, {
    refetchInterval: (q) => (watching || q.state.data?.statuses.some((s) => s.jobId) ? 1000 : 30_000),
  });
}

export function useRefreshCatalog() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.refreshCatalog, { onSettled: () => inv(ImageService, JobService) });
}

export function useScanISOs() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.scanISOs, { onSettled: () => inv(ImageService) });
}

export function useDownloadImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.downloadImage, { onSuccess: () => inv(ImageService, JobService) });
}

export function useDeleteImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.deleteImage, { onSuccess: () => inv(ImageService, JobService) });
}

export function useVerifyImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.verifyImage, { onSuccess: () => inv(ImageService, JobService) });
}

export function useCopyImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.copyImage, { onSuccess: () => inv(ImageService, JobService) });
}

export function useConvertImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.convertImage, { onSuccess: () => inv(ImageService, JobService) });
}
