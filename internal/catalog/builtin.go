package catalog

// builtin is the catalog Quarry ships: generic amd64 cloud images from their
// upstream mirrors. Upstreams rebuild these images in place (security
// updates), so entries name the checksum file published beside each image
// rather than pin a digest that would go stale; the download fetches it and
// verifies against it.
//
// Updating: a new Fedora release changes the URL and checksum file names
// (they carry the compose number); the others follow "latest"/"current"
// links and only change for a new major release.
var builtin = []Entry{
	{
		ID:          "ubuntu-22.04",
		Name:        "Ubuntu 22.04 LTS (Jammy Jellyfish)",
		OS:          OS{Distro: "ubuntu", Version: "22.04", Arch: "amd64"},
		URL:         "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img",
		ChecksumURL: "https://cloud-images.ubuntu.com/jammy/current/SHA256SUMS",
		Format:      "qcow2",
		DefaultUser: "ubuntu",
		Notes:       "Latest release build (rebuilt for updates); the .img file is qcow2.",
	},
	{
		ID:          "ubuntu-24.04",
		Name:        "Ubuntu 24.04 LTS (Noble Numbat)",
		OS:          OS{Distro: "ubuntu", Version: "24.04", Arch: "amd64"},
		URL:         "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
		ChecksumURL: "https://cloud-images.ubuntu.com/noble/current/SHA256SUMS",
		Format:      "qcow2",
		DefaultUser: "ubuntu",
		Notes:       "Latest release build (rebuilt for updates); the .img file is qcow2.",
	},
	{
		ID:          "debian-12",
		Name:        "Debian 12 (bookworm)",
		OS:          OS{Distro: "debian", Version: "12", Arch: "amd64"},
		URL:         "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
		ChecksumURL: "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS",
		Format:      "qcow2",
		DefaultUser: "debian",
		Notes:       "genericcloud: cloud-init, virtio drivers only (no drivers for physical hardware).",
	},
	{
		ID:          "debian-13",
		Name:        "Debian 13 (trixie)",
		OS:          OS{Distro: "debian", Version: "13", Arch: "amd64"},
		URL:         "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2",
		ChecksumURL: "https://cloud.debian.org/images/cloud/trixie/latest/SHA512SUMS",
		Format:      "qcow2",
		DefaultUser: "debian",
		Notes:       "genericcloud: cloud-init, virtio drivers only (no drivers for physical hardware).",
	},
	{
		ID:          "rocky-9",
		Name:        "Rocky Linux 9",
		OS:          OS{Distro: "rocky", Version: "9", Arch: "amd64"},
		URL:         "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud-Base.latest.x86_64.qcow2",
		ChecksumURL: "https://dl.rockylinux.org/pub/rocky/9/images/x86_64/CHECKSUM",
		Format:      "qcow2",
		DefaultUser: "rocky",
	},
	{
		ID:          "almalinux-9",
		Name:        "AlmaLinux OS 9",
		OS:          OS{Distro: "almalinux", Version: "9", Arch: "amd64"},
		URL:         "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/AlmaLinux-9-GenericCloud-latest.x86_64.qcow2",
		ChecksumURL: "https://repo.almalinux.org/almalinux/9/cloud/x86_64/images/CHECKSUM",
		Format:      "qcow2",
		DefaultUser: "almalinux",
	},
	{
		ID:          "centos-stream-9",
		Name:        "CentOS Stream 9",
		OS:          OS{Distro: "centos-stream", Version: "9", Arch: "amd64"},
		URL:         "https://cloud.centos.org/centos/9-stream/x86_64/images/CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2",
		ChecksumURL: "https://cloud.centos.org/centos/9-stream/x86_64/images/CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2.SHA256SUM",
		Format:      "qcow2",
		DefaultUser: "cloud-user",
	},
	{
		ID:          "centos-stream-10",
		Name:        "CentOS Stream 10",
		OS:          OS{Distro: "centos-stream", Version: "10", Arch: "amd64"},
		URL:         "https://cloud.centos.org/centos/10-stream/x86_64/images/CentOS-Stream-GenericCloud-10-latest.x86_64.qcow2",
		ChecksumURL: "https://cloud.centos.org/centos/10-stream/x86_64/images/CentOS-Stream-GenericCloud-10-latest.x86_64.qcow2.SHA256SUM",
		Format:      "qcow2",
		DefaultUser: "cloud-user",
		Notes:       "Needs a CPU with x86-64-v3 (Haswell or newer); set the VM's CPU model to host-passthrough or a v3 model.",
	},
	{
		ID:          "fedora-43",
		Name:        "Fedora Cloud 43",
		OS:          OS{Distro: "fedora", Version: "43", Arch: "amd64"},
		URL:         "https://download.fedoraproject.org/pub/fedora/linux/releases/43/Cloud/x86_64/images/Fedora-Cloud-Base-Generic-43-1.6.x86_64.qcow2",
		ChecksumURL: "https://download.fedoraproject.org/pub/fedora/linux/releases/43/Cloud/x86_64/images/Fedora-Cloud-43-1.6-x86_64-CHECKSUM",
		Format:      "qcow2",
		DefaultUser: "fedora",
		Notes:       "download.fedoraproject.org redirects to a mirror; once the release reaches end of life it moves to archives.fedoraproject.org.",
	},
	{
		ID:          "opensuse-leap-15.6",
		Name:        "openSUSE Leap 15.6",
		OS:          OS{Distro: "opensuse-leap", Version: "15.6", Arch: "amd64"},
		URL:         "https://download.opensuse.org/repositories/Cloud:/Images:/Leap_15.6/images/openSUSE-Leap-15.6.x86_64-NoCloud.qcow2",
		ChecksumURL: "https://download.opensuse.org/repositories/Cloud:/Images:/Leap_15.6/images/openSUSE-Leap-15.6.x86_64-NoCloud.qcow2.sha256",
		Format:      "qcow2",
		DefaultUser: "opensuse",
		Notes:       "NoCloud flavour: cloud-init reads its seed from a local disk or ISO.",
	},
}
