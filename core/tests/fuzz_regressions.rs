//! Every input kept from fuzzing — the seed corpus (`fuzz/seeds/<target>/`) and each crasher
//! found (`fuzz/regressions/<target>/`) — run through the very function its fuzz target calls
//! (`fuzz/src/harness.rs`, included here), so a fixed bug stays fixed in the normal suite.

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::path::PathBuf;

/// Runs every kept input of `target`; returns how many there were.
fn run_kept(target: &str) -> usize {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a target of the harness");
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let dir = fuzz.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("a kept input");
            eprintln!("{target}: {}", file.display());
            run(&data);
            n += 1;
        }
    }
    n
}

macro_rules! kept {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            let n = run_kept(stringify!($name));
            assert!(n > 0, "no kept inputs for {}", stringify!($name));
        }
    )*};
}

kept!(
    frames,
    pair_request,
    pair_answer,
    qr_payload,
    sync_message,
    blob_request,
    catalog
);

/// The seeds of the sync target reach the trust rules: what a phone may write is taken, what it
/// may not is refused (so the fuzzer starts from inputs on both sides of the rules).
#[test]
fn sync_seeds_reach_the_phone_write_rules() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/sync_message");
    let outcome = |name: &str| {
        harness::sync_message_outcome(&std::fs::read(seeds.join(name)).expect("a seed"))
    };
    let o = outcome("message");
    assert!(o.ended.is_none() && o.new_messages == 1, "{o:?}");
    let o = outcome("task");
    assert!(o.ended.is_none() && o.new_tasks == 1, "{o:?}");
    for taken in ["cancel", "decision"] {
        let o = outcome(taken);
        assert!(o.ended.is_none() && o.changed, "{taken}: {o:?}");
    }
    let o = outcome("all_four");
    assert!(
        o.ended.is_none() && o.new_messages == 2 && o.new_tasks == 1,
        "{o:?}"
    );
    for (refused, why) in [
        ("forbidden_put", "refused"),
        ("stranger", "not paired"),
        ("as_desktop", "refused"),
    ] {
        let o = outcome(refused);
        assert!(!o.changed, "{refused}: {o:?}");
        let ended = o.ended.unwrap_or_default();
        assert!(ended.contains(why), "{refused}: {ended}");
    }
    // The fuzzer's first stop: a message under the desktop's actor, signed by the phone.
    let kept = seeds
        .join("../../regressions/sync_message/crash-34700f81-message-under-the-desktops-actor");
    let o = harness::sync_message_outcome(&std::fs::read(kept).expect("the kept input"));
    assert!(!o.changed && o.ended.is_some(), "{o:?}");
}
