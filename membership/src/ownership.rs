//! Who may change what a daemon trusts. A mode check alone is not enough: a directory with mode
//! 0700 still belongs to whoever owns it, and a daemon run by root in a directory another user
//! owns (or below a parent that user can write) trusts files that user can swap. So a key file,
//! a data directory and a control socket must belong to the user running the process, and the
//! directories above a data directory must be changeable by that user or root only (a
//! world-writable parent is fine with the sticky bit, as `/tmp` has it).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A path that someone other than this process's user (or root, for parents) could replace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Exposure {
    /// The path belongs to another user.
    #[error(
        "{path} belongs to uid {owner}, but this process runs as uid {us}, so uid {owner} can \
         swap what it holds; run as uid {owner}, or `chown -R {us} {path}` if it is this \
         process's"
    )]
    ForeignOwner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective user.
        us: u32,
    },
    /// A directory above the path lets another user rename or replace what is in it.
    #[error(
        "{parent} (above {path}) {why}, so another user can replace {path}; use a location \
         whose parent directories only you or root can change"
    )]
    ReplaceableParent {
        /// The path checked.
        path: PathBuf,
        /// The directory above it.
        parent: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses `path` (whose metadata is `meta`) unless this process's user owns it.
pub fn check_owner(path: &Path, meta: &Metadata) -> Result<(), Exposure> {
    let us = effective_uid();
    if meta.uid() != us {
        return Err(Exposure::ForeignOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            us,
        });
    }
    Ok(())
}

/// Refuses `path` when a directory above it belongs to a user other than this process's and
/// root, or is writable by group or others without the sticky bit. Symbolic links are
/// resolved first; a parent that cannot be read is left to the operations that need it.
pub fn check_parents(path: &Path) -> Result<(), Exposure> {
    let us = effective_uid();
    let Ok(resolved) = std::fs::canonicalize(path) else {
        return Ok(());
    };
    for parent in resolved.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(parent) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        let why = if meta.uid() != us && meta.uid() != 0 {
            Some(format!("belongs to uid {}", meta.uid()))
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            Some(format!(
                "has mode {:03o}: writable by group or others, without the sticky bit",
                mode & 0o777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Exposure::ReplaceableParent {
                path: path.to_owned(),
                parent: parent.to_owned(),
                why,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn own_files_under_private_parents_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        check_owner(&path, &meta).unwrap();
        check_parents(&path).unwrap();
    }

    #[test]
    fn a_parent_others_can_write_without_the_sticky_bit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = shared.join("data");
        std::fs::create_dir(&path).unwrap();
        let err = check_parents(&path).unwrap_err();
        assert!(
            matches!(&err, Exposure::ReplaceableParent { parent, .. } if parent.ends_with("shared")),
            "{err}"
        );
        assert!(err.to_string().contains("sticky"), "{err}");
        // With the sticky bit (as /tmp has it) others cannot rename what is ours.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_parents(&path).unwrap();
    }
}
