//! `POST /v1/index` reads only under the configured index roots.

use std::path::{Path, PathBuf};

use crate::ApiError;

/// `requested`, resolved (`..` and symlinks included), if it is a directory under one of
/// the resolved `roots`; otherwise the error the client should see.
pub fn resolve_in_roots(requested: &Path, roots: &[PathBuf]) -> Result<PathBuf, ApiError> {
    if roots.is_empty() {
        return Err(ApiError::Forbidden(
            "server-side indexing is off (no index_roots configured)".into(),
        ));
    }
    // A relative path is taken relative to the first root, never to the server's cwd.
    let joined = if requested.is_absolute() {
        requested.to_path_buf()
    } else {
        roots[0].join(requested)
    };
    let resolved = joined
        .canonicalize()
        .map_err(|e| ApiError::NotFound(format!("{}: {e}", requested.display())))?;
    let inside = roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| resolved.starts_with(&root));
    if !inside {
        return Err(ApiError::Forbidden(format!(
            "{} is outside the configured index roots",
            requested.display()
        )));
    }
    if !resolved.is_dir() {
        return Err(ApiError::Validation(format!(
            "{} is not a directory",
            requested.display()
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn only_directories_under_a_root_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("file.png"), b"x").unwrap();
        let roots = vec![root.clone()];
        let canon = root.canonicalize().unwrap();

        assert_eq!(
            resolve_in_roots(&root.join("a/b"), &roots).unwrap(),
            canon.join("a/b")
        );
        assert_eq!(
            resolve_in_roots(Path::new("a"), &roots).unwrap(),
            canon.join("a")
        );
        for escape in [
            outside.clone(),
            root.join("../outside"),
            PathBuf::from("../outside"),
            PathBuf::from("/"),
        ] {
            assert!(
                matches!(
                    resolve_in_roots(&escape, &roots),
                    Err(ApiError::Forbidden(_))
                ),
                "{escape:?}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
            assert!(matches!(
                resolve_in_roots(&root.join("link-out"), &roots),
                Err(ApiError::Forbidden(_))
            ));
        }
        assert!(matches!(
            resolve_in_roots(&root.join("missing"), &roots),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            resolve_in_roots(&root.join("file.png"), &roots),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            resolve_in_roots(&root, &[]),
            Err(ApiError::Forbidden(_))
        ));
    }
}
