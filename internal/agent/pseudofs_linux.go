package agent

import "golang.org/x/sys/unix"

// pseudoFilesystems are the kernel's filesystems that show state rather
// than store files, by statfs(2) type. devtmpfs reports tmpfs's type, so
// /dev is refused by its path (names.SystemTree) instead.
var pseudoFilesystems = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.DEVPTS_SUPER_MAGIC:  "devpts",
	unix.PSTOREFS_MAGIC:      "pstore",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.EFIVARFS_MAGIC:      "efivarfs",
	unix.SELINUX_MAGIC:       "selinuxfs",
	unix.NSFS_MAGIC:          "nsfs",
	unix.BINFMTFS_MAGIC:      "binfmt_misc",
}

// pseudoFS names the pseudo filesystem dir is on, or "" (also when dir
// cannot be looked at: the pool's checks say why).
func pseudoFS(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return ""
	}
	return pseudoFilesystems[int64(st.Type)]
}
