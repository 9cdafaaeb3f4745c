//! The rpmbuild backend: rpm and dnf in the target's image, one phase per rpmbuild call.

use super::{
    sh_quote, target_defines, ContainerRepo, Script, MISSING_MARK, NEVR_FILE, OMP_PASSIVE, OUT_DIR,
    SOURCE_DIR, SPEC_DIR,
};
use crate::config::Target;

/// Macros for every rpmbuild call: a flat output layout and reproducible headers.
/// `sourcedir` is the read-only mount for `-bs`; a rebuild unpacks the SRPM elsewhere.
fn rpm_defines(sourcedir: &str) -> String {
    [
        ("_topdir", "/builddir/build"),
        ("_sourcedir", sourcedir),
        ("_specdir", "/builddir/build/SPECS"),
        ("_srcrpmdir", OUT_DIR),
        ("_rpmdir", OUT_DIR),
        (
            "_build_name_fmt",
            "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
        ),
        ("_buildhost", "packetary"),
        ("source_date_epoch_from_changelog", "1"),
        ("use_source_date_epoch_as_buildtime", "1"),
        ("clamp_mtime_to_source_epoch", "1"),
    ]
    .iter()
    .map(|(k, v)| format!("--define {}", sh_quote(&format!("{k} {v}"))))
    .collect::<Vec<_>>()
    .join(" ")
}

pub(super) fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let defines = format!("{} {}", rpm_defines(SOURCE_DIR), target_defines(target));
    let spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}"));
    let srpm = format!(
        r#"set -eu
mkdir -p /builddir/build
rpmbuild -bs {defines} {spec}
set -- {OUT_DIR}/*.src.rpm
[ "$#" -eq 1 ] && [ -f "$1" ] || {{ echo "packetary: expected one SRPM in {OUT_DIR}, found: $*"; exit 1; }}
# One rpm call for the NEVR (first line) and the BuildRequires (the rest) read by deps.
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n[%{{REQUIRENEVRS}}\n]' "$1" > {OUT_DIR}/{NEVR_FILE}
echo "packetary: wrote ${{1##*/}}""#
    );

    let releasever = target.releasever.as_deref().unwrap_or("packetary");
    let dnf = if repos.is_empty() {
        format!(
            r#"echo "packetary: target {} has no repositories to install them from""#,
            target.name
        )
    } else {
        let mut args = vec![
            "dnf".to_string(),
            "-y".into(),
            "builddep".into(),
            "--nogpgcheck".into(),
            format!("--releasever={}", sh_quote(releasever)),
            "--setopt=cachedir=/var/cache/packetary-dnf".into(),
            "--setopt=reposdir=/nonexistent".into(),
        ];
        for r in repos {
            args.push(format!(
                "--repofrompath={}",
                sh_quote(&format!("{},{}", r.name, r.url))
            ));
            args.push(format!("--repo={}", sh_quote(&r.name)));
        }
        args.push("\"$srpm\"".into());
        format!("{} && exit 0", args.join(" "))
    };
    // Checking with rpm first keeps the common case (nothing to install) free of dnf's start-up.
    // Bash builtins only until something is to be queried: each process start costs CPU
    // that parallel builds compete for.
    let deps = format!(
        r#"set -u
set -- {OUT_DIR}/*.src.rpm
srpm=$1
reqs=()
{{ read -r _ || true; while IFS= read -r r; do case "$r" in rpmlib\(*|"") ;; *) reqs+=("$r");; esac; done; }} < {OUT_DIR}/{NEVR_FILE}
missing=()
if [ "${{#reqs[@]}}" -gt 0 ]; then
  while IFS= read -r line; do
    case "$line" in "no package provides "*) missing+=("${{line#no package provides }}");; esac
  done < <(rpm -q --whatprovides "${{reqs[@]}}" 2>&1)
fi
if [ "${{#missing[@]}}" -eq 0 ]; then echo "packetary: all build dependencies are installed"; exit 0; fi
printf 'packetary: to install: %s\n' "${{missing[@]}}"
{dnf}
for dep in "${{missing[@]}}"; do
  rpm -q --whatprovides "$dep" >/dev/null 2>&1 || echo "{MISSING_MARK}$dep"
done
exit 1"#
    );
    let build = format!(
        r#"set -eu
rpmbuild --rebuild --target {arch} {defines} {macros} {OUT_DIR}/*.src.rpm"#,
        arch = sh_quote(&target.arch),
        defines = rpm_defines("/builddir/build/SOURCES"),
        macros = target_defines(target)
    );
    Script {
        srpm,
        deps: Some(deps),
        build,
        offline_build: true,
        files: vec![],
        env: vec![
            "LANG=C.UTF-8".into(),
            "HOME=/builddir".into(),
            OMP_PASSIVE.into(),
        ],
        cap_add: vec![],
        security_opt: vec!["no-new-privileges".into()],
    }
}
