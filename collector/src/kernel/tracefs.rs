//! tracefs: where the tracepoints live, and the record layouts the kernel describes there.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

/// The places the kernel documents for tracefs, newest first.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` (in a container, bind-mount the host's \
         /sys/kernel/tracing)"
    )]
    NotMounted(io::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: PathBuf, source: io::Error },
    #[error("tracepoint {tracepoint} has no field `{field}` on this kernel")]
    MissingField { tracepoint: String, field: String },
}

/// A mounted tracefs.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs, mounting it at `/sys/kernel/tracing` if nothing is mounted (we run as root
    /// anyway, and aya needs it to attach tracepoints).
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(root) = Self::find() {
            return Ok(Self { root });
        }
        mount_tracefs(Path::new(TRACEFS_MOUNTS[0])).map_err(TracefsError::NotMounted)?;
        Ok(Self {
            root: PathBuf::from(TRACEFS_MOUNTS[0]),
        })
    }

    fn find() -> Option<PathBuf> {
        TRACEFS_MOUNTS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.join("events").is_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `category:name` exists on this kernel.
    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    /// Reads and parses `events/<category>/<name>/format`.
    pub fn event_format(&self, category: &str, name: &str) -> Result<EventFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            path: path.clone(),
            source,
        })?;
        Ok(EventFormat::parse(&format!("{category}:{name}"), &text))
    }
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let target = CString::new(target.as_os_str().as_encoded_bytes())?;
    let source = c"nodev";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The fields of a tracepoint record, as the kernel's `format` file lists them.
#[derive(Debug, Clone)]
pub struct EventFormat {
    pub tracepoint: String,
    pub fields: Vec<Field>,
    /// The `__print_symbolic` names of its print format, by value (`skb:kfree_skb`'s drop
    /// reasons: the values change between kernels, the names do not). Empty without any.
    pub symbolic_names: BTreeMap<usize, String>,
}

impl EventFormat {
    /// Parses lines like `field:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;`. Lines it does not
    /// understand are skipped: the file also holds the name, the id and the print format.
    pub fn parse(tracepoint: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.trim().split(';').map(str::trim);
                let declaration = parts.next()?.strip_prefix("field:")?;
                let offset = parts.next()?.strip_prefix("offset:")?.parse().ok()?;
                let size = parts.next()?.strip_prefix("size:")?.parse().ok()?;
                // "char rwbs[10]" → "rwbs"; "__data_loc char[] cmd" → "cmd".
                let name = declaration.rsplit(' ').next()?;
                let name = name.split('[').next()?.to_string();
                Some(Field { name, offset, size })
            })
            .collect();
        Self {
            tracepoint: tracepoint.to_string(),
            fields,
            symbolic_names: parse_symbolic_names(text),
        }
    }

    pub fn field(&self, name: &str) -> Result<&Field, TracefsError> {
        self.fields
            .iter()
            .find(|field| field.name == name)
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_string(),
            })
    }

    /// Offset of `name`, checking that the field has the size the program reads.
    pub fn offset(&self, name: &str, expected_size: u32) -> Result<u32, TracefsError> {
        let field = self.field(name)?;
        if field.size < expected_size {
            return Err(TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: format!("{name} ({expected_size} bytes; kernel has {})", field.size),
            });
        }
        Ok(field.offset)
    }
}

/// The `{ value, "NAME" }` pairs of a format file's `__print_symbolic` lists.
fn parse_symbolic_names(format: &str) -> BTreeMap<usize, String> {
    let mut names = BTreeMap::new();
    let mut rest = format;
    while let Some(open) = rest.find("{ ") {
        rest = &rest[open + 2..];
        let Some(close) = rest.find(" }") else { break };
        let entry = &rest[..close];
        if let Some((number, name)) = entry.split_once(", ")
            && let Ok(number) = number.trim().parse::<usize>()
            && name.starts_with('"')
        {
            names.insert(number, name.trim_matches('"').to_string());
        }
        rest = &rest[close..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_6_18: &str = "name: block_rq_issue
ID: 2104
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;

print fmt: \"%d,%d %s\", REC->dev";

    #[test]
    fn parses_the_fields_of_a_format_file() {
        let format = EventFormat::parse("block:block_rq_issue", ISSUE_6_18);
        assert_eq!(format.offset("dev", 4).unwrap(), 8);
        assert_eq!(format.offset("sector", 8).unwrap(), 16);
        assert_eq!(format.offset("rwbs", 2).unwrap(), 34);
        assert_eq!(format.field("rwbs").unwrap().size, 10);
        assert_eq!(format.offset("cmd", 4).unwrap(), 60);
        assert_eq!(format.fields.len(), 7);
    }

    #[test]
    fn a_missing_or_short_field_is_an_error_naming_it() {
        let format = EventFormat::parse("block:block_rq_issue", ISSUE_6_18);
        let err = format.offset("error", 4).unwrap_err().to_string();
        assert!(
            err.contains("block:block_rq_issue") && err.contains("error"),
            "{err}"
        );
        let err = format.offset("dev", 8).unwrap_err().to_string();
        assert!(err.contains("dev (8 bytes; kernel has 4)"), "{err}");
    }

    #[test]
    fn drop_reason_names_come_from_the_format_file() {
        let format = r#"print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 77, "MAX" })"#;
        let names = EventFormat::parse("skb:kfree_skb", format).symbolic_names;
        assert_eq!(names[&2], "NOT_SPECIFIED");
        assert_eq!(names[&3], "NO_SOCKET");
        assert_eq!(names.len(), 3);
    }
}
