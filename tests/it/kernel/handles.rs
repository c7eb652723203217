//! Open files on the kernel's overlayfs against the view's handles
//! (`view::handle`): scripted sequences of handle operations run on a real
//! overlay mount (through descriptors the child process holds) and on the
//! model, every outcome and the whole tree compared after each step; the
//! outcomes that state the rules are also checked by value. The random
//! kernel differentials mix the same operations with all the others.
//!
//! What this machine's kernel was found to do (and the view does): a file
//! opened read-only on a lower layer, then copied up through another
//! descriptor, reads the copy (overlayfs reopens the real file since Linux
//! 4.19; older kernels kept reading the lower file); an unlinked upper file
//! still reads and writes with `nlink` 0; a lower file deleted without a
//! copy-up (a whiteout) still reads, with the lower file's link count; with
//! `index=off` a descriptor opened by the other name of a lower hard link
//! stays on the lower file when one name is copied up, with `index=on` it
//! follows.

use layerstack::merged::ViewOptions;
use layerstack::merged::{HardLinkCopyUp, OpenOptions};
use layerstack::testing::{Op, Outcome};
use layerstack::{ErrorKind, MemLayer};

/// The names are the scenario codec's (`testing::NAMES`): the child gets
/// each operation through it.
fn layers() -> Vec<MemLayer> {
    let mut l = MemLayer::new();
    l.add_file("a/a", "lower data\n").unwrap();
    l.add_file("a/b", "other\n").unwrap();
    l.add_file("b", "linked\n").unwrap();
    l.add_hard_link("b", "c").unwrap();
    vec![l]
}

fn open(path: &str, write: bool) -> Op {
    let mut options = OpenOptions::new();
    options.read(true).write(write);
    Op::OpenHandle {
        path: path.into(),
        options,
    }
}

fn read(slot: u8) -> Op {
    Op::HandleReadAt {
        slot,
        offset: 0,
        len: 15,
    }
}

fn bytes(b: &str) -> Outcome {
    Outcome::Bytes(b.as_bytes().to_vec())
}

fn nlink(o: &Outcome) -> u64 {
    match o {
        Outcome::Metadata(m) => m.nlink,
        other => panic!("not metadata: {other:?}"),
    }
}

#[test]
fn open_files_follow_copy_up_unlink_and_whiteouts_as_the_kernels() {
    let ops = vec![
        open("a/a", false),
        open("a/a", true),
        Op::HandleSetLen { slot: 1, len: 0 },
        Op::HandleWriteAt {
            slot: 1,
            offset: 0,
            data: b"UPPER".to_vec(),
        },
        read(0),
        Op::HandleMetadata { slot: 0 },
        Op::RemoveFile { path: "a/a".into() },
        Op::HandleMetadata { slot: 0 },
        Op::HandleWriteAt {
            slot: 1,
            offset: 5,
            data: b"more".to_vec(),
        },
        read(0),
        Op::Commit,
        Op::HandleSetLen { slot: 0, len: 1 },
        Op::HandleWriteAt {
            slot: 0,
            offset: 0,
            data: b"x".to_vec(),
        },
        Op::CloseHandle { slot: 0 },
        Op::CloseHandle { slot: 0 },
        open("a/b", false),
        Op::RemoveFile { path: "a/b".into() },
        read(0),
        Op::HandleMetadata { slot: 0 },
        Op::CloseHandle { slot: 0 },
        Op::CloseHandle { slot: 0 },
        Op::Commit,
    ];
    let Some((outcomes, _overlay)) = super::kernel_case(&layers(), &ops) else {
        return;
    };
    let busy = Outcome::Err(ErrorKind::Busy);
    let ebadf = Outcome::Err(ErrorKind::BadHandle);
    assert_eq!(outcomes[3], Outcome::Offset(5));
    assert_eq!(
        outcomes[4],
        bytes("UPPER"),
        "read-only, opened before the copy-up"
    );
    assert_eq!(nlink(&outcomes[5]), 1);
    assert_eq!(nlink(&outcomes[7]), 0, "unlinked while open");
    assert_eq!(
        outcomes[9],
        bytes("UPPERmore"),
        "an orphan reads and writes"
    );
    assert_eq!(
        outcomes[10], busy,
        "no commit (unmount) while files are open"
    );
    assert_eq!(outcomes[11], Outcome::Err(ErrorKind::InvalidInput));
    assert_eq!(outcomes[12], ebadf);
    assert_eq!(outcomes[17], bytes("other\n"), "whited out, not copied up");
    assert_eq!(nlink(&outcomes[18]), 1, "the lower file's link count");
    assert_eq!(outcomes[20], ebadf);
    assert_eq!(outcomes[21], Outcome::Unit);
}

#[test]
fn handles_on_the_other_name_of_a_lower_hard_link() {
    let ops = vec![
        open("c", false),
        open("b", false),
        Op::Write {
            path: "b".into(),
            data: b"changed\n".to_vec(),
        },
        read(0),
        read(1),
    ];
    let Some((broken, _overlay)) = super::kernel_case(&layers(), &ops) else {
        return;
    };
    assert_eq!(
        broken[3],
        bytes("linked\n"),
        "index=off: the other name stays below"
    );
    assert_eq!(broken[4], bytes("changed\n"));
    let kept = ViewOptions::default().hard_links(HardLinkCopyUp::Keep);
    let Some((kept, _overlay)) = super::kernel_case_with(&layers(), &ops, kept, "index=on") else {
        return;
    };
    assert_eq!(kept[3], bytes("changed\n"), "index=on: every name follows");
    assert_eq!(kept[4], bytes("changed\n"));
}
