//! Reading a failed phase's output: the capabilities the dependency phase could not
//! install and the line most worth showing. Pure functions of text the executor wrote.

use std::path::Path;

/// Marker the dependency phase prints before each capability it could not install.
pub const MISSING_MARK: &str = "packetary: missing build dependency: ";

/// Capabilities the dependency phase reported as not installable.
pub fn missing_capabilities(log: &str) -> Vec<String> {
    let mut out: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix(MISSING_MARK))
        .map(|s| s.trim().to_string())
        .collect();
    out.dedup();
    out
}

/// The line most worth showing from a failed phase's output. A command the shell could not
/// find comes first: rpmbuild's own "Bad exit status" line would hide which tool the spec
/// uses without declaring it.
pub fn first_error_line(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    if let Some(cmd) = lines.iter().find_map(|l| missing_command(l)) {
        return Some(format!(
            "command not found: {cmd} (the spec runs it without declaring it; fix: add a BuildRequires for {cmd} or the package that ships it)"
        ));
    }
    let pick = lines
        .iter()
        .find(|l| {
            let l = l.trim_start();
            l.starts_with("error:") || l.starts_with("Error:") || l.contains(": error:")
        })
        .or_else(|| lines.iter().find(|l| l.contains("Bad exit status")))
        // Mock's own errors, after rpmbuild's (Mock's last lines are its command line).
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.starts_with("ERROR:") && !l.starts_with("ERROR: Exception("))
        })
        .or_else(|| {
            lines.iter().rev().find(|l| {
                !l.trim().is_empty() && !l.starts_with("packetary:") && !l.starts_with('+')
            })
        })?;
    let s = pick.trim();
    Some(if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    })
}

/// The command of a shell's "not found" line: bash's `...: line 5: autoreconf: command not
/// found`, dash's `...: 5: autoreconf: not found`.
fn missing_command(line: &str) -> Option<String> {
    let rest = line
        .strip_suffix(": command not found")
        .or_else(|| line.strip_suffix(": not found"))?;
    let cmd = rest.rsplit(": ").next()?.trim();
    (!cmd.is_empty() && cmd.len() <= 100 && !cmd.contains(char::is_whitespace))
        .then(|| cmd.to_string())
}

/// The last `n` lines of a log file, for terminals.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        let log = "+ make\nfoo.c:1: error: expected ';'\nmake: *** [x] Error 1\nerror: Bad exit status from /var/tmp/rpm-tmp (%build)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("foo.c:1: error: expected ';'")
        );
        let log = "warning: x\nerror: line 7: Unknown tag: Bogus: 1\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: line 7: Unknown tag: Bogus: 1")
        );
        assert_eq!(
            first_error_line("+ true\nsomething broke\n").as_deref(),
            Some("something broke")
        );
        assert_eq!(first_error_line(""), None);
        let log = "+ autoreconf -fi\n/var/tmp/rpm-tmp.Ab1: line 42: autoreconf: command not found\nerror: Bad exit status from /var/tmp/rpm-tmp.Ab1 (%build)\n";
        let line = first_error_line(log).expect("a line");
        assert!(
            line.starts_with("command not found: autoreconf ")
                && line.contains("BuildRequires for autoreconf"),
            "{line}"
        );
        // Mock: its ERROR: line rather than the command line it ends with.
        let mock = "INFO: Start\nERROR: Exception(/out/a.src.rpm) Config(x) 0 minutes 1 seconds\nERROR: Could not create dir /out/r. Error: [Errno 13] Permission denied\n # bash --login -c '/usr/bin/rpmbuild -bb x.spec'\n";
        assert_eq!(
            first_error_line(mock).as_deref(),
            Some("ERROR: Could not create dir /out/r. Error: [Errno 13] Permission denied")
        );
    }

    #[test]
    fn missing_from_log() {
        let log = format!("x\n{MISSING_MARK}foo-devel >= 2\n{MISSING_MARK}bar\n");
        assert_eq!(missing_capabilities(&log), ["foo-devel >= 2", "bar"]);
    }
}
