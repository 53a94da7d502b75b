//! The one list of the tracker's own source files: frames located in them are trimmed
//! from the top of every traceback (see `symbolize`).
//!
//! Why files and not only names: with `debug = "line-tables-only"` (the release profile)
//! debug info holds short names like `on_alloc` without the module path, so names alone
//! cannot tell. Paths are matched as a suffix: the debug info may hold the path absolute
//! (a path dependency outside the workspace, a registry crate) or relative to the
//! workspace (`crates/tracker/src/…`), and `file!()` names this file the same way, so its
//! directory is the tracker's. Nothing here imports another tracker module.

/// The files of the allocation path, relative to this crate's `src/`: everything that
/// can sit on the stack above the user's code while a block is recorded.
pub(crate) const OWN_FILES: [&str; 8] = [
    "allocator.rs",
    "counters.rs",
    "guard.rs",
    "recorder.rs",
    "unwind.rs",
    "lock.rs",
    "sampler.rs",
    "filter.rs",
];

/// `src/` of this crate as the compiler names it (this file's path without its name).
fn own_dir() -> &'static str {
    file!().strip_suffix("sources.rs").unwrap_or("")
}

/// Whether `path` (as the debug info names it) is one of [`OWN_FILES`].
pub(crate) fn is_own_source(path: &str) -> bool {
    let dir = own_dir();
    OWN_FILES.iter().any(|name| {
        path.strip_suffix(name)
            .is_some_and(|rest| rest.ends_with(dir) || rest.ends_with('/') && is_own_crate(path))
    })
}

/// Whether `path` (shortened as tracebacks show it: relative to the workspace, or from
/// a registry crate's `name-version/` directory) is any file of this crate's `src/`: the
/// tracker's frames are library frames, never an application's site.
pub(crate) fn is_own_crate(path: &str) -> bool {
    let Some((dir, _)) = path.rsplit_once('/') else {
        return false;
    };
    let dir = format!("{dir}/");
    let own = own_dir();
    // `src/` alone is any crate's: only a directory above it tells the tracker apart.
    // Either side may be the longer: the debug info joins paths with the directory they
    // were compiled in, while `file!()` may be relative to the workspace.
    dir == own
        || (dir != "src/" && own.ends_with(&format!("/{dir}")))
        || (own != "src/" && dir.ends_with(&format!("/{own}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_file_exists() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for name in OWN_FILES {
            assert!(
                src.join(name).is_file(),
                "{name} is not in {}",
                src.display()
            );
        }
        assert!(own_dir().ends_with("src/"), "{}", own_dir());
    }

    #[test]
    fn matches_relative_and_absolute_paths_of_own_files_only() {
        let dir = own_dir();
        assert!(is_own_source(&format!("{dir}recorder.rs")));
        assert!(is_own_source(&format!("/build/{dir}allocator.rs")));
        assert!(!is_own_source(&format!("{dir}stats.rs")));
        assert!(!is_own_source("/elsewhere/src/allocator.rs"));
    }

    #[test]
    fn own_crate_is_every_file_of_this_src_dir() {
        let dir = own_dir();
        assert!(is_own_crate(&format!("{dir}stats.rs")));
        assert!(is_own_crate(&format!("{dir}symbolize.rs")));
        assert!(!is_own_crate("src/stats.rs"), "an application's src/");
        assert!(!is_own_crate("tests/exports.rs"));
        assert!(!is_own_crate("tokio-1.54.1/src/lib.rs"));
        assert!(is_own_crate(&format!("/build/{dir}stats.rs")), "absolute");
    }
}
