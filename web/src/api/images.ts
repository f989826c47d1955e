import { useMutation, useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { ImageService } from "../gen/quarry/v1/image_pb";
import { JobService } from "../gen/quarry/v1/job_pb";
import { useInvalidate } from "./invalidate";

export function useImages() {
  return useQuery(ImageService.method.listImages, {});
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

export function useConvertImage() {
  const inv = useInvalidate();
  return useMutation(ImageService.method.convertImage, { onSuccess: () => inv(ImageService, JobService) });
}
