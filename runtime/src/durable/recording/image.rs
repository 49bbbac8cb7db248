//! Building the disk a power loss leaves from what a session recorded: which name changes
//! survive, and each file's contents with the writes no sync covers kept, dropped or torn.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{
    FileChange, FileId, FileModel, FileOperation, ImageSummary, NameChange, Node, SessionState,
    SplitMix64, SECTOR_BYTES,
};

pub(super) type Image = (Vec<PathBuf>, Vec<(PathBuf, Vec<u8>)>, ImageSummary);

pub(super) fn build(session: &SessionState, random: &mut SplitMix64) -> Image {
    let mut summary = ImageSummary {
        events: session.clock,
        ..ImageSummary::default()
    };
    summary.at_loss = under_way(session);
    let names = surviving_names(session, random, &mut summary);
    let mut directories = Vec::new();
    let mut files = Vec::new();
    for (path, node) in names {
        match node {
            Node::Directory => directories.push(path),
            Node::File(file) => {
                let contents = file_after_loss(&session.files[file], random, &mut summary);
                files.push((path, contents));
                summary.files += 1;
            }
        }
    }
    (directories, files, summary)
}

/// Operations submitted and not completed, and name changes not yet durable, at the loss.
fn under_way(session: &SessionState) -> Vec<String> {
    // The name each file had last.
    let mut names = session.base_names.clone();
    for (_, change) in &session.names {
        apply_name_change(&mut names, change);
    }
    let mut file_names: HashMap<FileId, String> = HashMap::new();
    for (path, node) in &names {
        if let Node::File(file) = node {
            file_names.insert(*file, path.display().to_string());
        }
    }
    let mut under_way = Vec::new();
    for (file, model) in session.files.iter().enumerate() {
        let name = file_names
            .get(&file)
            .map_or("(a removed file)", String::as_str);
        for operation in model.operations.iter().filter(|op| op.completed.is_none()) {
            let what = match operation.change {
                FileChange::Write { .. } => "write",
                FileChange::Sync => "sync",
                FileChange::Length { allocate: true, .. } => "allocate",
                FileChange::Length {
                    allocate: false, ..
                } => "set length of",
            };
            under_way.push(format!("{what} {name}"));
        }
    }
    for sync in &session.directory_syncs {
        if sync.completed.is_none() {
            under_way.push(format!("sync directory {}/", sync.directory.display()));
        }
    }
    for (at, change) in &session.names {
        let directory = change.directory();
        let covered = session.directory_syncs.iter().any(|sync| {
            sync.directory == directory
                && sync.submitted > *at
                && matches!(sync.completed, Some((_, Ok(_))))
        });
        if covered {
            continue;
        }
        under_way.push(match change {
            NameChange::CreateFile { path, .. } => format!("create {}", path.display()),
            NameChange::CreateDirectory { path } => format!("create {}/", path.display()),
            NameChange::Rename { from, to } => {
                format!("rename {} -> {}", from.display(), to.display())
            }
            NameChange::Remove { path } => format!("remove {}", path.display()),
        });
    }
    under_way
}

fn apply_name_change(names: &mut BTreeMap<PathBuf, Node>, change: &NameChange) {
    match change {
        NameChange::CreateFile { path, file } => {
            names.insert(path.clone(), Node::File(*file));
        }
        NameChange::CreateDirectory { path } => {
            names.insert(path.clone(), Node::Directory);
        }
        NameChange::Rename { from, to } => {
            if let Some(node) = names.remove(from) {
                names.insert(to.clone(), node);
            }
        }
        NameChange::Remove { path } => {
            names.remove(path);
        }
    }
}

/// Applies the name changes that survive: per directory, every one up to the last a completed
/// directory sync covers, then a seeded number of the ones after it, in order.
fn surviving_names(
    session: &SessionState,
    random: &mut SplitMix64,
    summary: &mut ImageSummary,
) -> BTreeMap<PathBuf, Node> {
    let covered = |at: u64, directory: &Path| {
        session.directory_syncs.iter().any(|sync| {
            sync.directory == directory
                && sync.submitted > at
                && matches!(sync.completed, Some((_, Ok(_))))
        })
    };
    // Per directory: the changes in order, and how many of them survive.
    let mut per_directory: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (index, (_, change)) in session.names.iter().enumerate() {
        per_directory
            .entry(change.directory())
            .or_default()
            .push(index);
    }
    let mut survives = vec![false; session.names.len()];
    for (directory, changes) in &per_directory {
        let durable = changes
            .iter()
            .rposition(|&index| covered(session.names[index].0, directory))
            .map_or(0, |last| last + 1);
        let kept = durable + random.below((changes.len() - durable) as u64 + 1) as usize;
        for &index in &changes[..kept] {
            survives[index] = true;
        }
        summary.lost_names += (changes.len() - kept) as u64;
    }
    let mut names = session.base_names.clone();
    for (index, (_, change)) in session.names.iter().enumerate() {
        if survives[index] {
            apply_name_change(&mut names, change);
        }
    }
    // Entries whose directory did not survive went with it.
    let directories: Vec<PathBuf> = names
        .iter()
        .filter(|(_, node)| **node == Node::Directory)
        .map(|(path, _)| path.clone())
        .collect();
    names.retain(|path, _| {
        path.ancestors()
            .skip(1)
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .all(|ancestor| directories.iter().any(|directory| directory == ancestor))
    });
    names
}

/// What a write that no sync covers left on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Whole,
    Dropped,
    Torn,
}

/// The file's contents after the loss: its recorded base, then each write and length change in
/// submission order, durable ones whole and the others as the seeded generator decides.
fn file_after_loss(
    model: &FileModel,
    random: &mut SplitMix64,
    summary: &mut ImageSummary,
) -> Vec<u8> {
    let syncs: Vec<u64> = model
        .operations
        .iter()
        .filter(|operation| matches!(operation.change, FileChange::Sync))
        .filter(|operation| matches!(operation.completed, Some((_, Ok(_)))))
        .map(|operation| operation.submitted)
        .collect();
    let durable = |operation: &FileOperation| match operation.completed {
        Some((at, Ok(_))) => syncs.iter().any(|&submitted| submitted > at),
        _ => false,
    };
    let mut contents = model.base.clone();
    for operation in &model.operations {
        match &operation.change {
            FileChange::Sync => {}
            FileChange::Length { len, allocate } => {
                if !durable(operation) && random.chance(1, 2) {
                    summary.lost_lengths += 1;
                    continue;
                }
                let len = usize::try_from(*len).unwrap_or(usize::MAX);
                if *allocate {
                    if contents.len() < len {
                        contents.resize(len, 0);
                    }
                } else {
                    contents.resize(len, 0);
                }
            }
            FileChange::Write { offset, bytes } => {
                // A short write put only its first bytes in the file.
                let bytes = match operation.completed {
                    Some((_, Ok(written))) if written < bytes.len() => &bytes[..written],
                    _ => &bytes[..],
                };
                let fate = if durable(operation) {
                    summary.durable_writes += 1;
                    Fate::Whole
                } else {
                    let fate = match random.below(3) {
                        0 => Fate::Whole,
                        1 => Fate::Dropped,
                        _ => Fate::Torn,
                    };
                    match fate {
                        Fate::Whole => summary.kept_writes += 1,
                        Fate::Dropped => summary.dropped_writes += 1,
                        Fate::Torn => summary.torn_writes += 1,
                    }
                    fate
                };
                apply_write(&mut contents, *offset, bytes, fate, random);
            }
        }
    }
    contents
}

/// Puts the sectors of a write that reached the device into `contents`.
fn apply_write(
    contents: &mut Vec<u8>,
    offset: u64,
    bytes: &[u8],
    fate: Fate,
    random: &mut SplitMix64,
) {
    if fate == Fate::Dropped {
        return;
    }
    let mut at = 0usize;
    while at < bytes.len() {
        let position = offset + at as u64;
        let sector_end = (position / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let len = ((sector_end - position) as usize).min(bytes.len() - at);
        if fate == Fate::Whole || random.chance(1, 2) {
            let start = position as usize;
            if contents.len() < start + len {
                contents.resize(start + len, 0);
            }
            contents[start..start + len].copy_from_slice(&bytes[at..at + len]);
        }
        at += len;
    }
}
