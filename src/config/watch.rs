//! Watching the config file, so the control plane reloads when it changes.
//!
//! inotify on the file's directory, since editors and `mv` replace the file
//! rather than write it. Only the events that end a change are asked for:
//! a write closed (`IN_CLOSE_WRITE`), or a file renamed or linked into
//! place (`IN_MOVED_TO`, `IN_CREATE`). `IN_MODIFY` is not: a half-written
//! file is not worth reading, and an access log or stats database kept
//! beside the config would otherwise wake the control thread on each of its
//! writes. A Kubernetes ConfigMap volume is updated by renaming its `..data`
//! link into place, so that name counts as the file too.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};

/// The entry a ConfigMap volume swaps to publish new files.
const CONFIG_MAP_LINK: &str = "..data";

/// A watch on one config file. Created inside the Tokio runtime that awaits it.
pub struct ConfigWatch {
    events: EventStream<Vec<u8>>,
    name: OsString,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConfigWatch {
    pub fn new(path: &Path) -> io::Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
            .to_owned();
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let inotify = Inotify::init()?;
        inotify.watches().add(
            &directory,
            WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE,
        )?;
        Ok(Self {
            events: inotify.into_event_stream(vec![0; 4096])?,
            name,
        })
    }

    /// Resolves at the next change to the file; `None` if the watch broke.
    pub async fn changed(&mut self) -> Option<()> {
        loop {
            let event = self.events.next().await?.ok()?;
            let ours = event
                .name
                .is_some_and(|name| name == self.name || name == CONFIG_MAP_LINK);
            if ours {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn sees_change(watch: &mut ConfigWatch) -> bool {
        tokio::time::timeout(Duration::from_secs(2), watch.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_write_a_rename_and_a_config_map_swap_count_and_a_neighbour_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgate.yml");
        std::fs::write(&path, "a").unwrap();
        let mut watch = ConfigWatch::new(&path).unwrap();

        // A file beside it, written and kept open as a log is: no event.
        let mut log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        std::io::Write::write_all(&mut log, b"line\n").unwrap();
        std::fs::write(&path, "b").unwrap();
        assert!(sees_change(&mut watch).await, "written in place");
        // The log's writes never queued an event: nothing is left.
        std::io::Write::write_all(&mut log, b"line\n").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), watch.changed())
                .await
                .is_err(),
            "a neighbour's writes are not a change"
        );

        let next = dir.path().join("rgate.yml.tmp");
        std::fs::write(&next, "c").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(sees_change(&mut watch).await, "renamed into place");

        std::fs::create_dir(dir.path().join("..2026")).unwrap();
        std::os::unix::fs::symlink("..2026", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(sees_change(&mut watch).await, "ConfigMap swap");
    }
}
