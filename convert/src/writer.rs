//! Atomic output: everything is written into a temporary directory beside the output, fsynced,
//! then renamed into place, so an interrupted run never leaves a complete-looking output. Shard
//! files are created at their final size and filled by positioned writes, so tensors can be
//! written as soon as they are ready, in any order, without holding the output in memory.

use crate::error::ConvertError;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Makes staging names unique between conversions running in one process.
static STAGING_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Written last into every output directory: the names of the files tquant wrote there, so
/// `--force` can tell them from anything else.
pub const MANIFEST_FILE: &str = "tquant-output.json";

/// Checks that `target` may be written: refused if it exists without `force`; with `force`,
/// refused unless it is a directory holding only what tquant wrote there (the files its
/// manifest names, or those `also_ours` accepts). Nothing is removed here.
pub fn check_output(
    target: &Path,
    force: bool,
    also_ours: &dyn Fn(&str) -> bool,
) -> Result<(), ConvertError> {
    let meta = match target.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConvertError::io(target, e)),
        Ok(m) => m,
    };
    if !force {
        return Err(ConvertError::OutputExists {
            path: target.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(ConvertError::ForeignOutput {
            path: target.to_path_buf(),
            names: Vec::new(),
        });
    }
    let listed = manifest_names(target);
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(target).map_err(|e| ConvertError::io(target, e))? {
        let entry = entry.map_err(|e| ConvertError::io(target, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let ours = is_file
            && ((!listed.is_empty() && (name == MANIFEST_FILE || listed.contains(&name)))
                || also_ours(&name));
        if !ours {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(ConvertError::ForeignOutput {
        path: target.to_path_buf(),
        names: foreign,
    })
}

/// The files a tquant manifest in `dir` names; empty without a valid one.
fn manifest_names(dir: &Path) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST_FILE)) else {
        return BTreeSet::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return BTreeSet::new();
    };
    if json["written_by"] != "tquant" {
        return BTreeSet::new();
    }
    json["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter(|n| !n.contains('/') && *n != "." && *n != "..")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A temporary output directory that becomes `target` on [`StagingDir::commit`], and is removed
/// if dropped before.
#[derive(Debug)]
pub struct StagingDir {
    pub dir: PathBuf,
    target: PathBuf,
    /// Where an existing target is moved while `--force` replaces it.
    old: PathBuf,
    force: bool,
    committed: bool,
}

impl StagingDir {
    /// Creates `.<name>.tquant-tmp-<pid>-<n>` next to `target`. Refuses an existing `target`
    /// unless `force`.
    pub fn create(target: &Path, force: bool) -> Result<StagingDir, ConvertError> {
        check_output(target, force, &|_| false)?;
        let name = target
            .file_name()
            .ok_or_else(|| ConvertError::OutputName {
                path: target.to_path_buf(),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = parent_dir(target);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        remove_stale_staging(&parent, &name);
        let dir = parent.join(format!(".{name}.tquant-tmp-{tag}"));
        let old = parent.join(format!(".{name}.tquant-old-{tag}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ConvertError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| ConvertError::io(&dir, e))?;
        Ok(StagingDir {
            dir,
            target: target.to_path_buf(),
            old,
            force,
            committed: false,
        })
    }

    /// Creates a file of `len` bytes in the staging directory.
    pub fn create_file(&self, name: &str, len: u64) -> Result<File, ConvertError> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ConvertError::io(&path, e))?;
        file.set_len(len).map_err(|e| ConvertError::io(&path, e))?;
        Ok(file)
    }

    /// Writes a whole small file (JSON) and fsyncs it.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), ConvertError> {
        let file = self.create_file(name, 0)?;
        let path = self.dir.join(name);
        write_at(&file, bytes, 0).map_err(|e| ConvertError::io(&path, e))?;
        file.sync_all().map_err(|e| ConvertError::io(&path, e))
    }

    /// fsyncs the directory and renames it onto the target. Without `force` the target must
    /// still not exist: it is claimed with an exclusive `mkdir` (of two racing runs exactly one
    /// succeeds) and the staging directory is renamed over that empty claim, which POSIX
    /// `rename` does atomically; anything else at the target is never replaced. With `force`
    /// an existing target is moved aside first, then removed, and only if it still holds
    /// nothing but what tquant wrote.
    pub fn commit(mut self) -> Result<(), ConvertError> {
        self.write_manifest()?;
        sync_dir(&self.dir)?;
        let old = self.old.clone();
        let had_target = self.force && self.target.symlink_metadata().is_ok();
        if had_target {
            check_output(&self.target, true, &|_| false)?;
        }
        if had_target {
            std::fs::rename(&self.target, &old).map_err(|e| ConvertError::io(&self.target, e))?;
        }
        if !self.force && !cfg!(unix) && self.target.symlink_metadata().is_ok() {
            // Elsewhere `rename` cannot replace an empty directory: check, then rename.
            return Err(ConvertError::OutputExists {
                path: self.target.clone(),
            });
        }
        if !self.force && cfg!(unix) {
            match std::fs::create_dir(&self.target) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(ConvertError::OutputExists {
                        path: self.target.clone(),
                    })
                }
                Err(e) => return Err(ConvertError::io(&self.target, e)),
                Ok(()) => {}
            }
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.target) {
            if !self.force && cfg!(unix) {
                // Release the (still empty) claim.
                let _ = std::fs::remove_dir(&self.target);
            }
            return Err(ConvertError::io(&self.target, e));
        }
        self.committed = true;
        sync_dir(&parent_dir(&self.target))?;
        if had_target {
            let removed = if old.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            };
            removed.map_err(|e| ConvertError::io(&old, e))?;
        }
        Ok(())
    }
}

impl StagingDir {
    fn write_manifest(&self) -> Result<(), ConvertError> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| ConvertError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| ConvertError::io(&self.dir, e))?;
            files.push(entry.file_name().to_string_lossy().into_owned());
        }
        files.sort();
        let manifest = serde_json::json!({
            "written_by": "tquant",
            "version": env!("CARGO_PKG_VERSION"),
            "files": files,
        });
        let text = serde_json::to_vec_pretty(&manifest).expect("json");
        self.write_file(MANIFEST_FILE, &text)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a failed run leaves nothing behind; a killed one leaves only the
            // hidden temporary directory, never the output.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the temporary directories that interrupted runs (Ctrl-C, a kill) left for the same
/// output: `.<name>.tquant-tmp-<pid>-<n>` whose process no longer runs. Where that cannot be
/// told (no /proc), nothing is removed. Moved-aside old outputs are never touched.
fn remove_stale_staging(parent: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tquant-tmp-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|tag| tag.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// fsyncs a directory, so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), ConvertError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ConvertError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes all of `bytes` at `offset` without moving a shared cursor (safe from many threads).
pub fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut off) = (0usize, offset);
        while done < bytes.len() {
            let n = std::os::windows::fs::FileExt::seek_write(file, &bytes[done..], off)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
            off += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_staging_leaves_no_output() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        {
            let s = StagingDir::create(&target, false).unwrap();
            s.write_file("a.json", b"{}").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let s = StagingDir::create(&target, false).unwrap();
        s.write_file("a.json", b"1").unwrap();
        s.commit().unwrap();
        assert!(matches!(
            StagingDir::create(&target, false),
            Err(ConvertError::OutputExists { .. })
        ));
        let s = StagingDir::create(&target, true).unwrap();
        s.write_file("b.json", b"2").unwrap();
        s.commit().unwrap();
        assert!(target.join("b.json").exists() && !target.join("a.json").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn force_replaces_only_what_the_manifest_names() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let s = StagingDir::create(&target, false).unwrap();
        s.write_file("a.json", b"1").unwrap();
        s.commit().unwrap();
        check_output(&target, true, &|_| false).unwrap();
        // A file or directory added later, or a directory without a manifest, is not ours.
        std::fs::create_dir(target.join("sub")).unwrap();
        std::fs::write(target.join("z.txt"), "mine").unwrap();
        match check_output(&target, true, &|_| false) {
            Err(ConvertError::ForeignOutput { names, .. }) => assert_eq!(names, ["sub", "z.txt"]),
            other => panic!("{other:?}"),
        }
        assert!(StagingDir::create(&target, true).is_err());
        std::fs::remove_file(target.join(MANIFEST_FILE)).unwrap();
        std::fs::remove_dir(target.join("sub")).unwrap();
        std::fs::remove_file(target.join("z.txt")).unwrap();
        assert!(check_output(&target, true, &|_| false).is_err());
        check_output(&target, true, &|n| n == "a.json").unwrap();
    }

    #[test]
    fn stale_staging_of_dead_runs_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        // pid_max is at most 2^22 on Linux: no process has this id.
        let dead = tmp.path().join(".out.tquant-tmp-4294967294-0");
        let alive = tmp
            .path()
            .join(format!(".out.tquant-tmp-{}-99", std::process::id()));
        let other = tmp.path().join(".other.tquant-tmp-4294967294-0");
        let old = tmp.path().join(".out.tquant-old-4294967294-0");
        for d in [&dead, &alive, &other, &old] {
            std::fs::create_dir(d).unwrap();
        }
        let s = StagingDir::create(&target, false).unwrap();
        assert_eq!(!dead.exists(), cfg!(target_os = "linux"));
        assert!(alive.exists() && other.exists() && old.exists());
        drop(s);
    }
}
