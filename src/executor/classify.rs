//! Reading a failed phase's output: the capabilities the dependency phase could not
//! install and the one-line summary that names the cause (the forge shows it). Pure
//! functions of text the executor wrote.

use std::path::Path;

/// Marker the dependency phase prints before each capability it could not install.
pub const MISSING_MARK: &str = "packetary: missing build dependency: ";

/// Start of the error line the SRPM phase prints when the package's name, version or
/// release holds a macro rpm left unexpanded (see `backend::unexpanded_nevr_check`).
pub const UNEXPANDED_MARK: &str =
    "error: a macro is not expanded in the package's name, version or release: ";

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

/// The one-line summary of a failed phase on `target`: a macro the target does not define,
/// else the phase's first real error ([`first_error_line`]).
pub fn failure_summary(text: &str, target: &str) -> Option<String> {
    if let Some(name) = undefined_macro(text) {
        let why = match fedora_macro_package(&name) {
            Some(pkg) => format!(
                "macro `%{name}` is not defined on target {target}; it comes from {pkg} on Fedora \
                 (fix: build for a target whose buildroot has {pkg}, or write out the commands it stands for)"
            ),
            None => format!(
                "macro `%{name}` is not defined on target {target} \
                 (fix: define it in the spec, or build for a target that defines it)"
            ),
        };
        return Some(why);
    }
    first_error_line(text)
}

/// A failed phase's exit code when its output names no cause: a shell's 128+N is signal N
/// (137: SIGKILL), which says more than the number.
pub fn exit_status(code: i64) -> String {
    match code {
        129..=192 => format!("killed by signal {} (exit status {code})", code - 128),
        _ => format!("exit status {code}"),
    }
}

/// The line most worth showing from a failed phase's output: the first real error of the
/// failing tool, never a progress line. In order: a command the shell could not find (rpmbuild's
/// "Bad exit status" would hide which tool the spec uses without declaring it); rpmbuild's
/// `error: ...` or a compiler's `file:line: error: ...`, with the list that follows it; the
/// command a failing section stopped at; Mock's own `ERROR:`; the last line of output.
pub fn first_error_line(text: &str) -> Option<String> {
    let lines = rejoin_error_prefixes(text);
    if let Some(cmd) = lines.iter().find_map(|l| missing_command(l)) {
        return Some(format!(
            "command not found: {cmd} (the spec runs it without declaring it; fix: add a BuildRequires for {cmd} or the package that ships it)"
        ));
    }
    // A shell trace line shows a command, not what it said: `+ grep ': error:' log`.
    let is_error = |l: &str| {
        let t = l.trim_start();
        !t.starts_with('+')
            && (((t.starts_with("error:") || t.starts_with("Error:"))
                && !t.contains("Bad exit status"))
                || l.contains(": error:")
                || l.contains(": fatal error:"))
    };
    if let Some(i) = lines.iter().position(|l| is_error(l)) {
        return Some(clip(&with_location(&lines, i)));
    }
    if let Some(i) = lines.iter().position(|l| l.contains("Bad exit status")) {
        return Some(clip(&section_failure(&lines, i)));
    }
    // Mock's own errors (Mock's last lines are its command line).
    let pick = lines
        .iter()
        .find(|l| {
            l.starts_with("ERROR:")
                && !l.starts_with("ERROR: Exception(")
                && !l.starts_with("ERROR: Command failed")
        })
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty() && !is_progress(l))
        })?;
    Some(clip(pick.trim()))
}

/// The phase's lines with rpm's `error: ` prefix put back on its message. rpm writes the
/// prefix and the message to stderr in two writes, and Mock reads rpmbuild's stdout and
/// stderr into one stream: its progress lines can land between them, making
/// `error: Building target platforms: x86_64` and, two lines on, `line 11: Unclosed %if`.
fn rejoin_error_prefixes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut orphan = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("error:") {
            let rest = rest.trim_start();
            if rest.is_empty() || is_progress(rest) {
                orphan = true;
                if !rest.is_empty() {
                    out.push(rest.to_string());
                }
                continue;
            }
        }
        if orphan && !line.trim().is_empty() && !is_progress(line) {
            orphan = false;
            out.push(format!("error: {}", line.trim_start()));
        } else {
            out.push(line.to_string());
        }
    }
    out
}

/// Whether a line is progress, not a cause: rpmbuild's and Mock's running commentary, a
/// shell trace, Packetary's own notes.
fn is_progress(line: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "+",
        "packetary:",
        "Building target platforms:",
        "Building for target",
        "Executing(",
        "Wrote:",
        "Installing ",
        "Processing files:",
        "Provides:",
        "Requires:",
        "Requires(",
        "Conflicts:",
        "Obsoletes:",
        "Recommends:",
        "Suggests:",
        "Supplements:",
        "Enhances:",
        "Checking for unpackaged file(s):",
        "Finding  Provides:",
        "Finding  Requires",
        "RPM build errors:",
        "INFO:",
        "DEBUG:",
        "Start:",
        "Finish:",
        "Mock Version:",
        "ERROR: Exception(",
        "ERROR: Command failed",
        "# bash --login",
    ];
    let t = line.trim_start();
    PREFIXES.iter().any(|p| t.starts_with(p))
}

/// An rpm error without a place, told by the located error right under it (a bad `%if`:
/// "unexpected end of expression", a caret, then "x.spec:11: bad %if condition"): the
/// located line, the first in brackets.
fn with_location(lines: &[String], i: usize) -> String {
    let first = with_list(lines, i);
    if !lines[i].starts_with("error: ") || has_location(&lines[i]) {
        return first;
    }
    // rpm's errors come on stderr and Mock merges its stdout in: a progress line may land
    // between the error and the one that names its line.
    let located = lines[i + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty() && !is_progress(l))
        .take_while(|l| l.starts_with("error:"))
        .find(|l| has_location(l));
    match located {
        Some(l) => format!(
            "{} ({})",
            l.trim(),
            first.trim_start_matches("error:").trim()
        ),
        None => first,
    }
}

/// Whether an rpm error names a spec line: `line 7: ...` or `x.spec:11: ...`.
fn has_location(line: &str) -> bool {
    let digits_then_colon = |s: &str| {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        n > 0 && s[n..].starts_with(':')
    };
    line.match_indices("line ")
        .any(|(i, m)| digits_then_colon(&line[i + m.len()..]))
        || line
            .match_indices(".spec:")
            .any(|(i, m)| digits_then_colon(&line[i + m.len()..]))
}

/// An error line and, when it ends in `:`, the indented list under it (rpm's unpackaged
/// files, its failed build dependencies), on one line.
fn with_list(lines: &[String], i: usize) -> String {
    let head = lines[i].trim();
    if !head.ends_with(':') {
        return head.to_string();
    }
    let items: Vec<&str> = lines[i + 1..]
        .iter()
        .take_while(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty())
        .map(|l| l.trim())
        .collect();
    if items.is_empty() {
        head.to_string()
    } else {
        format!("{head} {}", items.join(", "))
    }
}

/// rpmbuild's "Bad exit status from /var/tmp/rpm-tmp.X (%check)" said as the command the
/// section stopped at: the last shell trace line before it (`bash -e -x`: the failing one).
fn section_failure(lines: &[String], i: usize) -> String {
    let section = lines[i]
        .rsplit_once('(')
        .and_then(|(_, s)| s.strip_suffix(')'))
        .filter(|s| s.starts_with('%'))
        .unwrap_or("its section")
        .to_string();
    let cmd = lines[..i]
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("Executing("))
        .find_map(|l| l.strip_prefix('+'))
        .map(|c| c.trim_start_matches('+').trim())
        .filter(|c| !c.is_empty());
    match cmd {
        Some(c) => format!("`{c}` failed in {section} (rpmbuild: Bad exit status)"),
        None => format!("error: Bad exit status from {section}"),
    }
}

/// At most 200 characters, cut on a character boundary.
fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The command of a shell's "not found" line: bash's `...: line 5: autoreconf: command not
/// found`, dash's `...: 5: autoreconf: not found`, bash's `...: line 5: /usr/bin/cmake: No
/// such file or directory` for a path. An unexpanded macro (`%cmake`) is not a command.
fn missing_command(line: &str) -> Option<String> {
    let (rest, path_only) = match line.strip_suffix(": No such file or directory") {
        Some(r) => (r, true),
        None => (
            line.strip_suffix(": command not found")
                .or_else(|| line.strip_suffix(": not found"))?,
            false,
        ),
    };
    let (before, cmd) = rest.rsplit_once(": ")?;
    let cmd = cmd.trim();
    if path_only {
        // bash's own line for a script command, not a tool's complaint about a file.
        let shell_line = before
            .rsplit_once(": line ")
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !shell_line || !cmd.starts_with('/') {
            return None;
        }
    }
    (!cmd.is_empty()
        && cmd.len() <= 100
        && !cmd.starts_with('%')
        && !cmd.contains(char::is_whitespace))
    .then(|| cmd.to_string())
}

/// A macro rpm left unexpanded in a failed phase: a section's shell command that starts
/// with `%name` or `%{name` (bash's trace shows it as written; bash then runs `fg`, dash
/// says "not found"), or a well-known Fedora macro named in an error line.
pub fn undefined_macro(text: &str) -> Option<String> {
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(cmd) = t.strip_prefix('+') {
            let cmd = cmd.trim_start_matches('+').trim_start();
            if let Some(name) = cmd.strip_prefix('%').and_then(macro_name) {
                return Some(name);
            }
            continue;
        }
        if let Some(rest) = t.strip_suffix(": not found") {
            if let Some(name) = rest
                .rsplit_once(": %")
                .and_then(|(_, m)| macro_name(m))
                .filter(|m| rest.ends_with(m.as_str()))
            {
                return Some(name);
            }
        }
        if t.starts_with("error:") || t.contains(": error:") {
            // In the NEVR every `%` is a macro; elsewhere only a well-known one is.
            let any = t.starts_with(UNEXPANDED_MARK);
            let mut at = t;
            while let Some(i) = at.find('%') {
                at = &at[i + 1..];
                if let Some(name) =
                    macro_name(at).filter(|n| any || fedora_macro_package(n).is_some())
                {
                    return Some(name);
                }
            }
        }
    }
    None
}

/// The macro name at the start of `s` (after its `%`): `name` or `{name`; none for `%%`,
/// `%{?name}` and `%{!?name}`, which rpm expands to nothing when undefined.
fn macro_name(s: &str) -> Option<String> {
    let s = s.strip_prefix('{').unwrap_or(s);
    let name: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // Bounded: the name goes into the summary, and spec text is anyone's.
    (name.len() >= 2 && name.len() <= 64 && !name.starts_with(|c: char| c.is_ascii_digit()))
        .then_some(name)
}

/// Fedora's packages of well-known build macros: a name, or a family's prefix ending in `_`
/// or `*`.
const FEDORA_MACROS: &[(&str, &str)] = &[
    ("pyproject_*", "pyproject-rpm-macros"),
    ("tox", "pyproject-rpm-macros"),
    ("py3_build", "python3-rpm-macros"),
    ("py3_install", "python3-rpm-macros"),
    ("py3_shebang_fix", "python3-rpm-macros"),
    ("py3_check_import", "python3-rpm-macros"),
    ("python3_*", "python3-rpm-macros"),
    ("__python3", "python3-rpm-macros"),
    ("py3_dist", "python-rpm-macros"),
    ("python_provide", "python-rpm-macros"),
    ("py_provides", "python-rpm-macros"),
    ("cmake*", "cmake-rpm-macros"),
    ("__cmake*", "cmake-rpm-macros"),
    ("ctest", "cmake-rpm-macros"),
    ("meson*", "meson"),
    ("ninja_*", "ninja-build"),
    ("autorelease", "rpmautospec-rpm-macros"),
    ("autochangelog", "rpmautospec-rpm-macros"),
    ("forge*", "forge-srpm-macros"),
    ("set_build_flags", "redhat-rpm-config"),
    ("build_cflags", "redhat-rpm-config"),
    ("build_cxxflags", "redhat-rpm-config"),
    ("build_ldflags", "redhat-rpm-config"),
    ("ldconfig_scriptlets", "redhat-rpm-config"),
    ("systemd_*", "systemd-rpm-macros"),
    ("_unitdir", "systemd-rpm-macros"),
    ("_userunitdir", "systemd-rpm-macros"),
    ("_presetdir", "systemd-rpm-macros"),
    ("_tmpfilesdir", "systemd-rpm-macros"),
    ("_sysusersdir", "systemd-rpm-macros"),
    ("tmpfiles_create", "systemd-rpm-macros"),
    ("sysusers_create_compat", "systemd-rpm-macros"),
    ("gometa", "go-srpm-macros"),
    ("goprep", "go-rpm-macros"),
    ("gobuild", "go-rpm-macros"),
    ("gocheck", "go-rpm-macros"),
    ("gopkginstall", "go-rpm-macros"),
    ("gopkgfiles", "go-rpm-macros"),
    ("cargo_*", "cargo-rpm-macros"),
    ("perl_vendorlib", "perl-macros"),
    ("perl_vendorarch", "perl-macros"),
    ("gem_*", "rubygems-devel"),
];

/// The Fedora package that ships a well-known macro.
pub fn fedora_macro_package(name: &str) -> Option<&'static str> {
    FEDORA_MACROS.iter().find_map(|(pat, pkg)| {
        let hit = match pat.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pat,
        };
        hit.then_some(*pkg)
    })
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

    /// The Mock srpm log of issue 23: rpm's `error: ` prefix and its message split by
    /// rpmbuild's progress lines.
    #[test]
    fn a_split_error_prefix_is_put_back_on_its_message() {
        let log = "Start: rpmbuild -bs\nerror: Building target platforms: x86_64\nBuilding for target x86_64\nline 11: Unclosed %if\nFinish: rpmbuild -bs\nERROR: Exception(/spec/x.spec) Config(c) 0 minutes 1 seconds\nERROR: Command failed: \n # bash --login -c '/usr/bin/rpmbuild -bs x.spec'\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: line 11: Unclosed %if")
        );
        // The prefix alone on its line, the message after a progress line.
        let log = "error: \nWrote: /out/x.src.rpm\nFile not found: /b/x\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: File not found: /b/x")
        );
        // Never a progress line, even as the last resort.
        let log = "Executing(%build): /bin/bash -e /var/tmp/rpm-tmp.X\nsomething broke\nINFO: Results and/or logs in: /out\nFinish: rpmbuild\n";
        assert_eq!(first_error_line(log).as_deref(), Some("something broke"));
    }

    #[test]
    fn an_error_without_a_place_is_told_by_the_located_one_under_it() {
        let log = "error: unexpected end of expression:  0 >\nerror:                                  ^\nerror: /builddir/build/SPECS/x.spec:11: bad %if condition:  0 >\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: /builddir/build/SPECS/x.spec:11: bad %if condition:  0 > (unexpected end of expression:  0 >)")
        );
    }

    /// Mock merges rpmbuild's stdout into its stderr: a progress line may come between an
    /// error and the error that names its line (a Mock failing-spec case's summary once
    /// lacked `:11:` so).
    #[test]
    fn progress_between_an_error_and_its_place_is_skipped() {
        let log = "error: unexpected end of expression:  0 >\nerror:                                  ^\nBuilding target platforms: x86_64\nerror: /builddir/build/SPECS/x.spec:11: bad %if condition:  0 >\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: /builddir/build/SPECS/x.spec:11: bad %if condition:  0 > (unexpected end of expression:  0 >)")
        );
    }

    #[test]
    fn a_list_under_an_error_is_part_of_it() {
        let log = "Checking for unpackaged file(s): /usr/lib/rpm/check-files /b\nerror: Installed (but unpackaged) file(s) found:\n   /usr/share/a/stray\n   /usr/share/a/other\n\nRPM build errors:\n    Installed (but unpackaged) file(s) found:\n   /usr/share/a/stray\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: Installed (but unpackaged) file(s) found: /usr/share/a/stray, /usr/share/a/other")
        );
    }

    #[test]
    fn a_failing_section_is_named_by_its_failing_command() {
        let log = "Executing(%check): /bin/bash -e /var/tmp/rpm-tmp.EQ\n+ echo 'running the test suite'\nrunning the test suite\n++ cat answer\n+ test 41 = 42\nerror: Bad exit status from /var/tmp/rpm-tmp.EQ (%check)\n\nRPM build errors:\n    Bad exit status from /var/tmp/rpm-tmp.EQ (%check)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("`test 41 = 42` failed in %check (rpmbuild: Bad exit status)")
        );
        // A command mentioning errors is not one.
        let log = "+ grep -c ': error:' build.txt\n0\nerror: Bad exit status from /var/tmp/rpm-tmp.A (%check)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("`grep -c ': error:' build.txt` failed in %check (rpmbuild: Bad exit status)")
        );
        // No trace of the section: rpmbuild's line, without its temporary file.
        let log = "Executing(%build): /bin/bash -e /var/tmp/rpm-tmp.A\nerror: Bad exit status from /var/tmp/rpm-tmp.A (%build)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("error: Bad exit status from %build")
        );
    }

    #[test]
    fn a_missing_absolute_command_is_a_missing_command() {
        let log = "+ /usr/bin/cmake -S . -B build\n/var/tmp/rpm-tmp.0G: line 48: /usr/bin/cmake: No such file or directory\nerror: Bad exit status from /var/tmp/rpm-tmp.0G (%build)\n";
        let line = first_error_line(log).expect("a line");
        assert!(
            line.starts_with("command not found: /usr/bin/cmake "),
            "{line}"
        );
        // A tool's complaint about a file is not a missing command.
        let log = "+ cat /x/y\ncat: /x/y: No such file or directory\nerror: Bad exit status from /var/tmp/rpm-tmp.0G (%build)\n";
        assert_eq!(
            first_error_line(log).as_deref(),
            Some("`cat /x/y` failed in %build (rpmbuild: Bad exit status)")
        );
    }

    #[test]
    fn undefined_macros_are_named_with_their_fedora_package() {
        // bash: the trace shows the macro, then `fg` complains.
        let bash = "Executing(%generate_buildrequires): /bin/bash -e /var/tmp/rpm-tmp.s\n+ cd pyproject-1.0\n+ %pyproject_buildrequires\n/var/tmp/rpm-tmp.s: line 29: fg: no job control\nerror: Bad exit status from /var/tmp/rpm-tmp.s (%generate_buildrequires)\n";
        assert_eq!(
            failure_summary(bash, "bookworm-rpmbuild").as_deref(),
            Some("macro `%pyproject_buildrequires` is not defined on target bookworm-rpmbuild; it comes from pyproject-rpm-macros on Fedora (fix: build for a target whose buildroot has pyproject-rpm-macros, or write out the commands it stands for)")
        );
        // dash, under Mock: "not found", which is not a missing command.
        let dash = "+ %cmake\n/var/tmp/rpm-tmp.F: 28: %cmake: not found\nerror: Bad exit status from /var/tmp/rpm-tmp.F (%build)\n";
        let s = failure_summary(dash, "t").expect("a summary");
        assert!(
            s.starts_with("macro `%cmake` is not defined on target t; it comes from cmake-rpm-macros on Fedora"),
            "{s}"
        );
        assert!(!first_error_line(dash)
            .unwrap_or_default()
            .contains("command not found"));
        // Braces, a macro of no known package, one named in rpm's error.
        let s = failure_summary("+ %{__python3} setup.py build\n", "t").expect("a summary");
        assert!(
            s.contains("`%__python3`") && s.contains("python3-rpm-macros"),
            "{s}"
        );
        let s = failure_summary("+ %my_own_thing --x\n", "t").expect("a summary");
        assert!(
            s.starts_with("macro `%my_own_thing` is not defined on target t (fix: define it"),
            "{s}"
        );
        let s = failure_summary(
            &format!("{UNEXPANDED_MARK}x-1.0-%{{my_release}}.src.rpm\n"),
            "t",
        )
        .expect("a summary");
        assert!(
            s.starts_with("macro `%my_release` is not defined on target t"),
            "{s}"
        );
        let s = failure_summary(
            "error: File must begin with \"/\": %{python3_sitelib}/*\n",
            "t",
        )
        .expect("a summary");
        assert!(s.contains("`%python3_sitelib`"), "{s}");
        // A name longer than any macro's is not shown whole.
        let long = format!("+ %{}\n", "a".repeat(10_000));
        assert_eq!(undefined_macro(&long), None);
        // Not macros: printf formats, %{?x}, the shell's `%` in an argument, rpm's %if.
        for log in [
            "+ printf '%s\\n' x\nerror: Bad exit status from /v (%build)\n",
            "+ echo %{?x}\n",
            "error: line 11: Unclosed %if\n",
        ] {
            assert_eq!(undefined_macro(log), None, "{log}");
        }
    }

    #[test]
    fn exit_codes_of_signals_name_them() {
        assert_eq!(exit_status(137), "killed by signal 9 (exit status 137)");
        assert_eq!(exit_status(2), "exit status 2");
        assert_eq!(exit_status(255), "exit status 255");
    }

    #[test]
    fn missing_from_log() {
        let log = format!("x\n{MISSING_MARK}foo-devel >= 2\n{MISSING_MARK}bar\n");
        assert_eq!(missing_capabilities(&log), ["foo-devel >= 2", "bar"]);
    }
}
