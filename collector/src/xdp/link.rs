//! The XDP links' side of bpf(2) that aya 0.14 does not expose: a link's interface, a forced
//! detach, and who holds the XDP attachment of an interface (for error messages).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_LINK_TYPE_XDP` of `enum bpf_link_type`.
const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised bpf_attr prefix of the size we pass; the kernel
    // zero-extends the rest.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A descriptor of the object pinned at `path` (aya's links do not lend theirs).
pub(crate) fn open_pin(path: &std::path::Path) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut attr = GetAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// (link type, link id, program id, XDP ifindex) of a link; the ifindex is 0 once the link
/// is defunct (its interface went away) or for other link types.
pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<(u32, u32, u32, u32)> {
    // struct bpf_link_info: type, id, prog_id, then a union 8-aligned at offset 16 whose
    // `xdp` member starts with the ifindex. 128 zeroed bytes cover every member we read.
    let mut info = [0u32; 32];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let ifindex = if info[0] == BPF_LINK_TYPE_XDP {
        info[4]
    } else {
        0
    };
    Ok((info[0], info[1], info[2], ifindex))
}

/// Detaches a link now, whoever else holds a descriptor of it (Linux 5.9); the link object
/// lives on, defunct, until its last descriptor and pin go.
pub(crate) fn force_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct DetachAttr {
        link_fd: u32,
    }
    bpf(
        BPF_LINK_DETACH,
        &mut DetachAttr {
            link_fd: link.as_raw_fd() as u32,
        },
    )
    .map(drop)
}

/// The interface's index, or `None` if there is no such interface.
pub(crate) fn ifindex(interface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Says which XDP program holds `interface` and which processes hold its link, for the
/// error when attaching fails with EEXIST/EBUSY. Best effort: a program attached through
/// netlink (`ip link set … xdp …`) has no link to find.
pub(crate) fn describe_holder(interface: &str) -> String {
    let Some(wanted) = ifindex(interface) else {
        return format!("{interface} does not exist");
    };
    let mut id = 0u32;
    loop {
        #[repr(C)]
        struct NextAttr {
            start_id: u32,
            next_id: u32,
            open_flags: u32,
        }
        let mut next = NextAttr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
        };
        if bpf(BPF_LINK_GET_NEXT_ID, &mut next).is_err() {
            break;
        }
        id = next.next_id;
        let mut by_id = NextAttr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
        };
        let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut by_id) else {
            continue;
        };
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let Ok((kind, link_id, prog_id, index)) = link_info(std::os::fd::AsFd::as_fd(&fd)) else {
            continue;
        };
        if kind != BPF_LINK_TYPE_XDP || index != wanted {
            continue;
        }
        let name = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|program| program.id() == prog_id)
            .and_then(|program| program.name_as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let holders = link_holders(link_id);
        return format!(
            "XDP program {name:?} (id {prog_id}) is attached to {interface} through link {link_id}{}",
            if holders.is_empty() {
                " (pinned, or held by no process we can see)".to_string()
            } else {
                format!(", held by {}", holders.join(", "))
            }
        );
    }
    format!(
        "another XDP program is attached to {interface} (not through a BPF link; see `ip -d link \
         show dev {interface}`)"
    )
}

/// Processes with a descriptor of link `link_id`, as "pid N (comm)".
fn link_holders(link_id: u32) -> Vec<String> {
    let wanted = format!("link_id:\t{link_id}");
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for proc in procs.flatten() {
        let pid = proc.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path())
                .is_ok_and(|info| info.lines().any(|line| line == wanted))
        });
        if holds {
            let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
            holders.push(format!("pid {pid} ({})", comm.trim()));
        }
    }
    holders
}
