package osguess

import "testing"

func TestGuess(t *testing.T) {
	tests := []struct {
		label, file, want string
	}{
		{"Ubuntu-Server 24.04.1 LTS amd64", "", "ubuntu 24.04 amd64"},
		{"Ubuntu 22.04.4 LTS arm64", "", "ubuntu 22.04 arm64"},
		{"", "ubuntu-24.04.1-live-server-amd64.iso", "ubuntu 24.04 amd64"},
		{"Debian 12.5.0 amd64 n", "debian-12.5.0-amd64-netinst.iso", "debian 12 amd64"},
		{"Debian 13.0.0 arm64 1", "", "debian 13 arm64"},
		{"Rocky-9-4-x86_64-dvd", "Rocky-9.4-x86_64-dvd.iso", "rocky 9.4 amd64"},
		{"", "Rocky-8.10-x86_64-minimal.iso", "rocky 8.10 amd64"},
		{"AlmaLinux-9-4-x86_64-dvd", "", "almalinux 9.4 amd64"},
		{"AlmaLinux-9-4-aarch64-dvd", "", "almalinux 9.4 arm64"},
		{"Fedora-S-dvd-x86_64-40", "", "fedora 40 amd64"},
		{"Fedora-WS-Live-41-1-4", "Fedora-Workstation-Live-x86_64-41-1.4.iso", "fedora 41 amd64"},
		{"CentOS-Stream-9-BaseOS-x86_64", "", "centos-stream 9 amd64"},
		{"CentOS 7 x86_64", "CentOS-7-x86_64-DVD-2009.iso", "centos 7 amd64"},
		{"openSUSE-Leap-15.6-DVD-x86_64710", "", "opensuse-leap 15.6 amd64"},
		{"", "openSUSE-Tumbleweed-NET-x86_64-Current.iso", "opensuse-tumbleweed amd64"},
		{"CCCOMA_X64FRE_EN-US_DV9", "Win11_23H2_English_x64v2.iso", "windows 11 amd64"},
		{"CPBA_X64FRE_EN-US_DV5", "", "windows amd64"},
		{"SSS_X64FREE_EN-US_DV9", "en-us_windows_server_2022_updated_x64_dvd.iso", "windows-server 2022 amd64"},
		{"", "Win10_22H2_English_x32.iso", "windows 10"},
		{"", "FreeBSD-14.1-RELEASE-amd64-disc1.iso", "freebsd 14.1 amd64"},
		{"CDROM", "", ""},
		{"", "", ""},
		{"my-custom-tools", "tools.iso", ""},
	}
	for _, tt := range tests {
		t.Run(tt.label+"|"+tt.file, func(t *testing.T) {
			if got := Guess(tt.label, tt.file).String(); got != tt.want {
				t.Errorf("Guess(%q, %q) = %q; want %q", tt.label, tt.file, got, tt.want)
			}
		})
	}
}
