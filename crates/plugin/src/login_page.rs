//! How `kubectl nsdebug ui` hands a one-time login link to the browser
//! without putting it on a command line.
//!
//! A browser is started with its URL as an argument, and every user of the
//! machine can read a process's arguments (`/proc/PID/cmdline`); a bastion
//! host has many users, and a browser lives for hours. A loopback listener
//! of the plugin's own does not help there: every user of the host can
//! connect to it, and its port is on the same command line. So the plugin
//! writes a small page, readable by the user alone (mode 0600, in
//! `$XDG_RUNTIME_DIR` or the temporary directory), that sends the browser on
//! to the link with `location.replace` (no history entry holds the code:
//! the agent's page removes it from its own address at once), and starts
//! the browser with that file's path. The file is removed when the link
//! expires or the plugin stops, whichever comes first.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::PluginError;

/// The page leading to a login link; removed when dropped.
pub struct LoginPage {
    file: tempfile::NamedTempFile,
}

impl LoginPage {
    /// Writes the page for `link` (the agent's `/#login=CODE` URL).
    pub fn write(link: &str) -> Result<Self, PluginError> {
        let dir = private_dir();
        let write_error = |source| PluginError::Write {
            path: dir.clone(),
            source,
        };
        // tempfile creates the file O_EXCL with mode 0600.
        let mut file = tempfile::Builder::new()
            .prefix("nsdebug-login-")
            .suffix(".html")
            .tempfile_in(&dir)
            .map_err(write_error)?;
        file.write_all(page(link).as_bytes())
            .and_then(|()| file.flush())
            .map_err(write_error)?;
        Ok(Self { file })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Where only this user may read: `$XDG_RUNTIME_DIR` (mode 0700) when set,
/// else the temporary directory (the file itself is 0600).
fn private_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The page: on to the link at once, or a link to click.
fn page(link: &str) -> String {
    let href = html_escape(link);
    format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<meta name=\"referrer\" content=\"no-referrer\">\n<title>nsdebug login</title>\n<p><a id=\"login\" href=\"{href}\">Open the nsdebug web terminal</a> (a one-time login link).</p>\n<script>location.replace(document.getElementById(\"login\").href);</script>\n"
    )
}

fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_private_and_leads_to_the_link() {
        let page = LoginPage::write("https://127.0.0.1:7443/#login=abc\"<").unwrap();
        #[cfg(unix)]
        {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(page.path()).unwrap().permissions(),
            );
            assert_eq!(mode & 0o077, 0);
        }
        let text = std::fs::read_to_string(page.path()).unwrap();
        assert!(
            text.contains("href=\"https://127.0.0.1:7443/#login=abc&quot;&lt;\""),
            "{text}"
        );
        let path = page.path().to_path_buf();
        drop(page);
        assert!(!path.exists(), "removed when dropped");
    }
}
