package isofs_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/quarry-project/quarry/internal/isofs"
	"github.com/quarry-project/quarry/internal/isofs/isotest"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name string
		im   isotest.Image
	}{
		{"ubuntu", isotest.Image{Label: "Ubuntu-Server 24.04.1 LTS amd64", SystemID: "LINUX", Bootable: true, Size: 1 << 20}},
		{"windows", isotest.Image{Label: "CCCOMA_X64FRE_EN-US_DV9", SystemID: "", Size: 64 << 10}},
		{"max label", isotest.Image{Label: "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", Size: 40 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if _, err := tt.im.WriteTo(&b); err != nil {
				t.Fatal(err)
			}
			info, err := isofs.Read(bytes.NewReader(b.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if info.Label != tt.im.Label || info.SystemID != tt.im.SystemID || info.Bootable != tt.im.Bootable {
				t.Errorf("Read = %+v; want label %q system %q bootable %v", info, tt.im.Label, tt.im.SystemID, tt.im.Bootable)
			}
			if info.ApplicationID != "QUARRY ISOTEST" {
				t.Errorf("ApplicationID = %q", info.ApplicationID)
			}
			if want := uint64(max(tt.im.Size, int64(len(tt.im.Header())))); info.VolumeBytes != want {
				t.Errorf("VolumeBytes = %d; want %d", info.VolumeBytes, want)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	valid := isotest.Image{Label: "X", Size: 40 << 10}.Header()
	noPrimary := bytes.Clone(valid)
	noPrimary[16*2048] = 2 // the primary descriptor becomes supplementary
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", make([]byte, 16*2048+10)},
		{"zeros", make([]byte, 40<<10)},
		{"qcow2", append([]byte("QFI\xfb"), make([]byte, 40<<10)...)},
		{"no primary descriptor", noPrimary},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := isofs.Read(bytes.NewReader(tt.b)); !errors.Is(err, isofs.ErrNotISO) {
				t.Fatalf("Read = %v; want ErrNotISO", err)
			}
		})
	}
}

func TestLabelCleaned(t *testing.T) {
	h := isotest.Image{Label: "OK", Size: 40 << 10}.Header()
	copy(h[16*2048+40:], "Bad\x00\x07Label\xff")
	info, err := isofs.Read(bytes.NewReader(h))
	if err != nil {
		t.Fatal(err)
	}
	if info.Label != "Bad  Label" {
		t.Errorf("Label = %q; want control bytes and invalid UTF-8 blanked", info.Label)
	}
}

// FuzzRead feeds arbitrary descriptor bytes: Read must never panic, and
// whatever it returns is printable and bounded.
func FuzzRead(f *testing.F) {
	f.Add(isotest.Image{Label: "Ubuntu 24.04", Bootable: true}.Header()[16*2048:])
	f.Add(isotest.Image{Label: "X"}.Header()[16*2048:])
	f.Add([]byte("\x01CD001\x01"))
	f.Fuzz(func(t *testing.T, desc []byte) {
		img := append(make([]byte, 16*2048), desc...)
		info, err := isofs.Read(bytes.NewReader(img))
		if err != nil {
			return
		}
		if len(info.Label) > 32*3 || len(info.SystemID) > 32*3 {
			t.Fatalf("unbounded fields: %+v", info)
		}
		for _, r := range info.Label {
			if r < 0x20 {
				t.Fatalf("control character in label %q", info.Label)
			}
		}
	})
}
