//! Just enough of the BPF Type Format to find where a kernel struct keeps a field: Aya cannot
//! emit CO-RE relocations, so the daemon reads the running kernel's layout from
//! `/sys/kernel/btf/vmlinux` at start-up and hands the offsets to its programs.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("BTF type kind {0} unknown")]
    UnknownKind(u32),
    #[error("struct {0} not found in BTF")]
    NoStruct(String),
    #[error("struct {structure} has no member {member}")]
    NoMember { structure: String, member: String },
    #[error("the size of BTF type {0} cannot be resolved")]
    UnsizedType(u32),
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// One struct or union: its name and members as (name, type id, bit offset).
struct Composite {
    name: String,
    members: Vec<(String, u32, u32)>,
}

/// How big a type is: its own size (integers, enums, structs, unions, floats), that of the
/// type it names or qualifies (typedef, const, volatile, restrict, type tag), or an array's.
#[derive(Clone, Copy)]
enum Size {
    Bytes(u32),
    Of(u32),
    Array { element: u32, count: u32 },
    Unknown,
}

/// A struct member as the kernel lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the struct.
    pub offset: u32,
    /// Size in bytes (of the member's type, through typedefs and qualifiers).
    pub size: u32,
}

/// The structs and unions of a BTF blob, by type id, and every type's size.
pub struct Btf {
    composites: HashMap<u32, Composite>,
    /// Indexed by type id (0 is `void`).
    sizes: Vec<Size>,
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, BtfError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Truncated(at))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Truncated(at))
}

impl Btf {
    /// Parses a little-endian BTF blob (what every x86_64 and arm64 kernel exposes).
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        if u16_at(bytes, 0)? != MAGIC {
            return Err(BtfError::BadHeader);
        }
        let header_len = u32_at(bytes, 4)? as usize;
        let type_off = u32_at(bytes, 8)? as usize;
        let type_len = u32_at(bytes, 12)? as usize;
        let str_off = u32_at(bytes, 16)? as usize;
        let str_len = u32_at(bytes, 20)? as usize;
        let types = header_len + type_off;
        let strings = header_len + str_off;
        if bytes.len() < types + type_len || bytes.len() < strings + str_len {
            return Err(BtfError::Truncated(bytes.len()));
        }
        let string = |offset: u32| -> String {
            let start = strings + offset as usize;
            let end = bytes[start..strings + str_len]
                .iter()
                .position(|&b| b == 0)
                .map_or(strings + str_len, |nul| start + nul);
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        };
        let mut composites = HashMap::new();
        let mut sizes = vec![Size::Unknown];
        let mut at = types;
        let mut id = 1u32;
        while at < types + type_len {
            let name_off = u32_at(bytes, at)?;
            let info = u32_at(bytes, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            // The third word is a size for the sized kinds, a type id for the referring ones.
            let size_or_type = u32_at(bytes, at + 8)?;
            sizes.push(match kind {
                1 | KIND_STRUCT | KIND_UNION | 6 | 16 | 19 => Size::Bytes(size_or_type),
                // Pointers are 8 bytes on the 64-bit kernels we read.
                2 => Size::Bytes(8),
                8..=11 | 18 => Size::Of(size_or_type),
                3 => Size::Array {
                    element: u32_at(bytes, at + 12)?,
                    count: u32_at(bytes, at + 20)?,
                },
                _ => Size::Unknown,
            });
            at += 12;
            // Size of what follows the common header, by kind (see the kernel's btf.rst).
            let extra = match kind {
                1 => 4,                    // INT
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                3 => 12,                   // ARRAY
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                6 => 8 * vlen,   // ENUM
                13 => 8 * vlen,  // FUNC_PROTO
                14 => 4,         // VAR
                15 => 12 * vlen, // DATASEC
                17 => 4,         // DECL_TAG
                19 => 12 * vlen, // ENUM64
                other => return Err(BtfError::UnknownKind(other)),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for index in 0..vlen {
                    let member = at + 12 * index;
                    let offset = u32_at(bytes, member + 8)?;
                    // With kind_flag the top 8 bits hold a bitfield size.
                    let bit_offset = if kind_flag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    };
                    members.push((
                        string(u32_at(bytes, member)?),
                        u32_at(bytes, member + 4)?,
                        bit_offset,
                    ));
                }
                composites.insert(
                    id,
                    Composite {
                        name: string(name_off),
                        members,
                    },
                );
            }
            at += extra;
            id += 1;
        }
        Ok(Self { composites, sizes })
    }

    pub fn from_kernel() -> Result<Self, anyhow::Error> {
        let bytes = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Ok(Self::parse(&bytes)?)
    }

    /// Byte offset of `member` in `struct structure`, looking through anonymous struct and
    /// union members (as the C compiler does).
    pub fn member_offset(&self, structure: &str, member: &str) -> Result<u32, BtfError> {
        self.find_member(structure, member)
            .map(|(bits, _)| bits / 8)
    }

    /// Offset and size of `member` in `struct structure`, for a field a program reads with a
    /// fixed width: the caller checks the width before handing the offset over.
    pub fn member(&self, structure: &str, member: &str) -> Result<Member, BtfError> {
        let (bits, type_id) = self.find_member(structure, member)?;
        Ok(Member {
            offset: bits / 8,
            size: self.type_size(type_id)?,
        })
    }

    /// The bit offset and type id of `member` in `struct structure`.
    fn find_member(&self, structure: &str, member: &str) -> Result<(u32, u32), BtfError> {
        let (_, composite) = self
            .composites
            .iter()
            .filter(|(_, c)| c.name == structure)
            // A name can also belong to a union or be declared twice; the one with members
            // is the definition.
            .max_by_key(|(_, c)| c.members.len())
            .ok_or_else(|| BtfError::NoStruct(structure.to_string()))?;
        self.find_in(composite, member, 0)
            .ok_or_else(|| BtfError::NoMember {
                structure: structure.to_string(),
                member: member.to_string(),
            })
    }

    /// Size in bytes of type `id`, following typedefs, qualifiers and arrays (a bounded
    /// number of steps: malformed BTF could make a cycle).
    fn type_size(&self, id: u32) -> Result<u32, BtfError> {
        let mut current = id;
        let mut multiplier = 1u32;
        for _ in 0..32 {
            match self.sizes.get(current as usize) {
                Some(Size::Bytes(bytes)) => {
                    return bytes
                        .checked_mul(multiplier)
                        .ok_or(BtfError::UnsizedType(id));
                }
                Some(Size::Of(next)) => current = *next,
                Some(Size::Array { element, count }) => {
                    multiplier = multiplier
                        .checked_mul(*count)
                        .ok_or(BtfError::UnsizedType(id))?;
                    current = *element;
                }
                Some(Size::Unknown) | None => break,
            }
        }
        Err(BtfError::UnsizedType(id))
    }

    /// (bit offset, type id) of `member`, searching anonymous members too.
    fn find_in(&self, composite: &Composite, member: &str, base_bits: u32) -> Option<(u32, u32)> {
        for (name, type_id, bit_offset) in &composite.members {
            if name == member {
                return Some((base_bits + bit_offset, *type_id));
            }
            if name.is_empty()
                && let Some(inner) = self.composites.get(type_id)
                && let Some(found) = self.find_in(inner, member, base_bits + bit_offset)
            {
                return Some(found);
            }
        }
        None
    }
}

/// For tests that read this machine's BTF: the kernel's, or `None` after saying loudly why
/// the test skips (a panic where the run demands every kernel-facing test).
#[cfg(test)]
pub(crate) fn kernel_btf_or_skip() -> Option<Btf> {
    match Btf::from_kernel() {
        Ok(btf) => Some(btf),
        Err(err) => {
            assert!(
                std::env::var_os("NODESTATE_REQUIRE_PRIVILEGED_TESTS").is_none(),
                "the kernel's BTF is unreadable: {err:#}"
            );
            eprintln!("skipping test - the kernel's BTF is unreadable: {err:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct task { int pid; union { long a; struct { int x; int exit_code; }; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0task\0pid\0a\0x\0exit_code\0int\0long\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap()
                + 1) as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (INT, 4 bytes + 4 extra)
        push(&[name("int"), 1 << 24, 4, 32]);
        // 2: long
        push(&[name("long"), 1 << 24, 8, 64]);
        // 3: anonymous struct { int x @0; int exit_code @32 bits }
        push(&[0, (KIND_STRUCT << 24) | 2, 8]);
        push(&[name("x"), 1, 0, name("exit_code"), 1, 32]);
        // 4: anonymous union { long a @0; struct(3) @0 }
        push(&[0, (KIND_UNION << 24) | 2, 8]);
        push(&[name("a"), 2, 0, 0, 3, 0]);
        // 5: struct task { int pid @0; union(4) @64 bits }
        push(&[name("task"), (KIND_STRUCT << 24) | 2, 16]);
        push(&[name("pid"), 1, 0, 0, 4, 64]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_direct_and_nested_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("task", "pid"), Ok(0));
        assert_eq!(btf.member_offset("task", "a"), Ok(8));
        assert_eq!(btf.member_offset("task", "exit_code"), Ok(12));
    }

    #[test]
    fn member_sizes_follow_the_member_type() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("task", "pid"), Ok(Member { offset: 0, size: 4 }));
        assert_eq!(btf.member("task", "a"), Ok(Member { offset: 8, size: 8 }));
        assert_eq!(
            btf.member("task", "exit_code"),
            Ok(Member {
                offset: 12,
                size: 4
            })
        );
    }

    /// This machine's kernel: x86_64's `struct pt_regs` keeps the syscall number in
    /// `orig_ax` (an `unsigned long` at byte 120, the uapi layout the x86 daemon relies on)
    /// and has no arm64 `syscallno`.
    #[test]
    fn reads_pt_regs_from_the_running_kernel() {
        let Some(btf) = kernel_btf_or_skip() else {
            return;
        };
        assert!(btf.member("task_struct", "pid").is_ok_and(|m| m.size == 4));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                btf.member("pt_regs", "orig_ax"),
                Ok(Member {
                    offset: 120,
                    size: 8
                })
            );
            assert!(matches!(
                btf.member("pt_regs", "syscallno"),
                Err(BtfError::NoMember { .. })
            ));
        }
    }

    #[test]
    fn missing_structs_members_and_bad_data_are_errors() {
        let btf = Btf::parse(&sample()).unwrap();
        assert!(matches!(
            btf.member_offset("nope", "pid"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member_offset("task", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert_eq!(Btf::parse(b"garbage!").err(), Some(BtfError::BadHeader));
        let blob = sample();
        assert!(matches!(
            Btf::parse(&blob[..blob.len() - 10]),
            Err(BtfError::Truncated(_))
        ));
    }
}
