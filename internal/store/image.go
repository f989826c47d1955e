package store

import (
	"context"
	"time"
)

// ImageKind mirrors quarry.v1.ImageKind.
type ImageKind string

const (
	KindCloudImage ImageKind = "CLOUD_IMAGE"
	KindISO        ImageKind = "ISO"
	KindDisk       ImageKind = "DISK"
)

// ImageState mirrors quarry.v1.ImageState.
type ImageState string

const (
	ImagePending     ImageState = "PENDING"
	ImageDownloading ImageState = "DOWNLOADING"
	ImageVerifying   ImageState = "VERIFYING"
	ImageReady       ImageState = "READY"
	ImageError       ImageState = "ERROR"
	ImageMissing     ImageState = "MISSING"
	ImageDeleting    ImageState = "DELETING"
	// ImageUploading: a client is sending the file (an upload job).
	ImageUploading ImageState = "UPLOADING"
)

// ImageOrigin says how an image entered the library.
type ImageOrigin string

const (
	OriginDiscovered ImageOrigin = "discovered"
	OriginDownloaded ImageOrigin = "downloaded"
	OriginUploaded   ImageOrigin = "uploaded"
	// OriginCopied: copied from another image of the cluster (CopyImage,
	// or a download whose digest the cluster already held).
	OriginCopied ImageOrigin = "copied"
	// OriginConverted: qemu-img made it from another image of the pool.
	OriginConverted ImageOrigin = "converted"
)

// Image is a file in a pool that VMs can use.
type Image struct {
	ID     string
	PoolID string
	Name   string
	Kind   ImageKind
	Format string // qcow2, raw, iso, vmdk, vhdx; "" unknown
	State  ImageState
	// StateReason explains ERROR and MISSING states.
	StateReason string
	// RelPath is the file's path relative to the pool root, slash-separated
	// ("iso/ubuntu.iso"); unique within a pool.
	RelPath     string
	SizeBytes   int64
	ModTime     time.Time
	VolumeLabel string
	Bootable    bool
	OSDistro    string
	OSVersion   string
	OSArch      string
	SHA256      string // hex; "" until computed
	// Verified: SHA256 was checked against an expected digest (a checksum
	// given, from the catalog or a checksum file), not only computed.
	Verified bool
	// VirtualSize is the disk size a VM sees, from the header; 0 unknown.
	VirtualSize int64
	Origin      ImageOrigin
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// MissingSince is when the file was last found gone; zero otherwise.
	MissingSince time.Time
	// PoolName is the name of pool PoolID, as ListImagesPage read it with
	// the page; other reads leave it empty, and writes ignore it.
	PoolName string
}

// ImageFilter selects images; zero fields match everything.
type ImageFilter struct {
	PoolID string
	Kind   ImageKind
	State  ImageState
	// Search matches images whose name, path, volume label, OS (distro,
	// version, architecture), format, SHA-256 or id contains it; ASCII
	// letters match either case.
	Search string
}

// ScanChanges is what one ISO scan of a pool changes, applied at once.
type ScanChanges struct {
	Create []Image
	// Update replaces every field of images found again or changed; each
	// applies only if the image is still in the state it was read in
	// (ExpectState), so a download or delete that moved it meanwhile wins.
	Update []ImageUpdate
}

// ImageUpdate is one conditional replacement.
type ImageUpdate struct {
	Image       Image
	ExpectState ImageState
	// Move also sets the image's path to Image.RelPath: its file was
	// renamed or moved inside the pool, and the image keeps its id,
	// metadata and history. The path must be free in the pool.
	Move bool
}

// ImageCount is how many images of one pool are of one kind and state.
type ImageCount struct {
	PoolID string
	Kind   ImageKind
	State  ImageState
	N      int
}

// ImageStore keeps the image library.
type ImageStore interface {
	// CreateImage inserts im; ErrConflict when the pool already has an
	// image at im.RelPath; ErrNotFound when the pool does not exist.
	CreateImage(ctx context.Context, im Image) error
	GetImage(ctx context.Context, id string) (Image, error)
	// ListImages returns matching images ordered by pool, then RelPath.
	ListImages(ctx context.Context, f ImageFilter) ([]Image, error)
	// ListImagesPage returns one page of ListImages, each image with its
	// PoolName, and the token of the next page ("" after the last).
	ListImagesPage(ctx context.Context, f ImageFilter, p Page) ([]Image, string, error)
	// CountImages counts the images of every (pool, kind, state) that has
	// any, without reading them.
	CountImages(ctx context.Context) ([]ImageCount, error)
	// UpdateImage replaces every mutable field of the image with im.ID
	// (not ID, PoolID, RelPath, CreatedAt).
	UpdateImage(ctx context.Context, im Image) error
	// DeleteImage removes the record (the file is the caller's business).
	DeleteImage(ctx context.Context, id string) error
	// ApplyScan applies a pool's scan in one transaction and returns how
	// many updates were skipped because their image changed state
	// meanwhile.
	ApplyScan(ctx context.Context, poolID string, c ScanChanges) (skipped int, err error)
}
