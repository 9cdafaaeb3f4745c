//! The mock backend: Mock in the target's image builds the SRPM and rebuilds it.

use super::{
    sh_quote, ContainerRepo, Script, NEVR_FILE, OMP_PASSIVE, OUT_DIR, SOURCE_DIR, SPEC_DIR,
};
use crate::config::Target;

/// Path of the generated Mock configuration inside the container.
pub const MOCK_CFG: &str = "/out/.packetary/packetary.cfg";

pub(super) fn script(target: &Target, spec_file: &str, repos: &[ContainerRepo]) -> Script {
    let cfg = mock_config(target, repos);
    let common = format!("mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot");
    let srpm = format!(
        r#"set -eu
{common} --buildsrpm --spec {spec} --sources {SOURCE_DIR} --resultdir {OUT_DIR}/.packetary/srpm
mv {OUT_DIR}/.packetary/srpm/*.src.rpm {OUT_DIR}/
set -- {OUT_DIR}/*.src.rpm
rpm -qp --qf '%{{NAME}}\t%{{EPOCH}}\t%{{VERSION}}\t%{{RELEASE}}\n' "$1" > {OUT_DIR}/{NEVR_FILE}"#,
        spec = sh_quote(&format!("{SPEC_DIR}/{spec_file}"))
    );
    let build = format!(
        r#"set -eu
{common} --rebuild {OUT_DIR}/*.src.rpm --resultdir {OUT_DIR}/.packetary/rebuild
find {OUT_DIR}/.packetary/rebuild -name '*.rpm' ! -name '*.src.rpm' -exec mv {{}} {OUT_DIR}/ \;"#
    );
    Script {
        srpm,
        deps: None,
        build,
        offline_build: false,
        files: vec![("packetary.cfg".into(), cfg)],
        // Mock refuses plain root; it drops to the user sudo would name (see images/mock-*).
        env: vec![
            "LANG=C.UTF-8".into(),
            "SUDO_USER=mockbuild".into(),
            "SUDO_UID=1000".into(),
            "SUDO_GID=1000".into(),
            OMP_PASSIVE.into(),
        ],
        // Least privilege instead of --privileged, which these hosts refuse.
        cap_add: vec!["SYS_ADMIN".into(), "SYS_CHROOT".into(), "MKNOD".into()],
        security_opt: vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
    }
}

/// Mock's configuration for a target: Python assignments to `config_opts`.
pub fn mock_config(target: &Target, repos: &[ContainerRepo]) -> String {
    let releasever = target.releasever.as_deref().unwrap_or("0");
    let mut s = String::new();
    let mut set = |k: &str, v: String| {
        let path: String = k.split('/').map(|p| format!("[{}]", py_str(p))).collect();
        s.push_str(&format!("config_opts{path} = {v}\n"))
    };
    set("root", py_str(&format!("packetary-{}", target.name)));
    set("target_arch", py_str(&target.arch));
    set("legal_host_arches", format!("({},)", py_str(&target.arch)));
    set("chroot_setup_cmd", py_str(&target.chroot_setup));
    set("releasever", py_str(releasever));
    if let Some(dist) = &target.dist {
        set("dist", py_str(dist));
        set("macros/%dist", py_str(&format!(".{dist}")));
    }
    set("package_manager", py_str("dnf"));
    set("isolation", py_str("simple"));
    set("use_bootstrap", "False".into());
    set("use_bootstrap_image", "False".into());
    set("rpmbuild_networking", "False".into());
    set("use_host_resolv", "False".into());
    set("plugin_conf/root_cache_enable", "True".into());
    set("plugin_conf/ccache_enable", "False".into());
    let mut dnf = String::from(
        "[main]\nkeepcache=1\ndebuglevel=2\nreposdir=/dev/null\nlogfile=/var/log/yum.log\nretries=20\nobsoletes=1\ngpgcheck=0\nassumeyes=1\nsyslog_ident=mock\nsyslog_device=\ninstall_weak_deps=0\nmetadata_expire=0\nbest=1\nprotected_packages=\n",
    );
    for r in repos {
        dnf.push_str(&format!(
            "\n[packetary-{name}]\nname={name}\nbaseurl={url}\nenabled=1\ngpgcheck=0\nskip_if_unavailable=False\n",
            name = r.name,
            url = r.url
        ));
    }
    set(
        "dnf.conf",
        format!("\"\"\"\n{}\"\"\"", dnf.replace('"', "\\\"")),
    );
    s
}

/// A Python string literal.
fn py_str(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', "\\\\")
            .replace('\'', "\\'")
            .replace('\n', "\\n")
    )
}

#[cfg(test)]
mod tests {
    use super::super::script as backend_script;
    use super::super::tests::{repos, target};
    use super::*;

    #[test]
    fn mock_config_and_commands() {
        let t = target("fedora-43");
        let s = backend_script(&t, "pkg.spec", &repos());
        assert!(s.deps.is_none());
        assert!(s.srpm.contains(&format!(
            "mock -r {MOCK_CFG} --isolation=simple --no-bootstrap-chroot"
        )));
        assert!(s
            .srpm
            .contains("--buildsrpm --spec /spec/pkg.spec --sources /src"));
        assert!(s
            .build
            .contains("--rebuild /out/*.src.rpm --resultdir /out/.packetary/rebuild"));
        assert_eq!(s.cap_add, ["SYS_ADMIN", "SYS_CHROOT", "MKNOD"]);
        assert!(s.env.contains(&"SUDO_UID=1000".to_string()));
        assert!(!s.security_opt.iter().any(|o| o.contains("privileged")));

        let (name, cfg) = &s.files[0];
        assert_eq!(name, "packetary.cfg");
        for line in [
            "config_opts['root'] = 'packetary-fedora-43'",
            "config_opts['target_arch'] = 'x86_64'",
            "config_opts['chroot_setup_cmd'] = 'install @buildsys-build'",
            "config_opts['releasever'] = '43'",
            "config_opts['dist'] = 'fc43'",
            "config_opts['macros']['%dist'] = '.fc43'",
            "config_opts['isolation'] = 'simple'",
            "config_opts['use_bootstrap'] = False",
            "config_opts['rpmbuild_networking'] = False",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
        assert!(cfg.contains("[packetary-fedora]\nname=fedora\nbaseurl=https://example.org/f43/\n"));
        assert!(cfg.contains("[packetary-local]\nname=local\nbaseurl=file:///repos/local\n"));
        // The dnf.conf block is one Python triple-quoted string.
        assert_eq!(cfg.matches("\"\"\"").count(), 2);
    }

    #[test]
    fn python_strings_are_escaped() {
        assert_eq!(py_str("a'b\\c\nd"), r"'a\'b\\c\nd'");
    }
}
