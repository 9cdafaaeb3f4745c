//! The configuration's checks: every refusal names the file, the key and the fix.

use std::time::Duration;

use super::*;

fn err(text: &str) -> String {
    Config::parse(text, Some(Path::new("test.toml")))
        .expect_err("should be rejected")
        .to_string()
}

#[test]
fn embedded_defaults_parse() {
    let c = Config::load(None).expect("defaults are valid");
    assert_eq!(c.default_targets.len(), 1);
    let t = &c.targets[&c.default_targets[0]];
    assert_eq!(t.backend, Backend::Rpmbuild);
    assert!(c.parallel >= 1);
}

#[test]
fn example_file_parses() {
    let text = include_str!("../../config/packetary.example.toml");
    let c = Config::parse(text, Some(Path::new("example.toml"))).expect("example is valid");
    assert_eq!(c.parallel, 2);
    let fedora = &c.targets[&TargetName::parse("fedora-43").expect("name")];
    assert_eq!(fedora.backend, Backend::Mock);
    assert_eq!(fedora.repos.len(), 2);
    assert_eq!(fedora.limits.memory_bytes, Some(8 << 30));
    assert_eq!(fedora.limits.timeout, Duration::from_secs(4 * 3600));
    assert_eq!(c.server.body_limit, 25 << 20);
    assert_eq!(c.server.public_url, "https://packetary.example.com");
    let gh = c.github.expect("example has [github]");
    assert!(matches!(gh.auth, GithubAuth::Token(SecretSource::Env(ref v)) if v == "GITHUB_TOKEN"));
    assert_eq!(gh.webhook_secrets.len(), 1);
    assert!(!gh.build_forks);
}

#[test]
fn github_section_is_checked() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
    let e = err(&format!("{base}[github]\nwebhook_secrets = [\"s\"]\n"));
    assert!(e.contains("no way to authenticate"), "{e}");
    let e = err(&format!("{base}[github]\ntoken = \"t\"\n"));
    assert!(e.contains("github.webhook_secrets"), "{e}");
    let e = err(&format!(
        "{base}[github]\ntoken = \"t\"\nwebhook_secrets = [\"s\"]\nrepositories = [\"nope\"]\n"
    ));
    assert!(e.contains("github.repositories"), "{e}");
    let e = err(&format!("{base}[server]\nlisten = \"nowhere\"\n"));
    assert!(e.contains("server.listen"), "{e}");
    let e = err(&format!("{base}[server]\nbody_limit = \"10\"\n"));
    assert!(e.contains("server.body_limit"), "{e}");
    let c = Config::parse(
        &format!("{base}[github]\ntoken = {{ file = \"/nonexistent\" }}\nwebhook_secrets = [\"hunter2\", {{ env = \"PACKETARY_TEST_UNSET\" }}]\n"),
        None,
    )
    .expect("valid");
    let gh = c.github.expect("github");
    let debug = format!("{gh:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert_eq!(
        gh.webhook_secrets[0]
            .resolve("k")
            .expect("literal")
            .expose(),
        "hunter2"
    );
    let e = gh.webhook_secrets[1]
        .resolve("github.webhook_secrets[1]")
        .expect_err("unset")
        .to_string();
    assert!(
        e.contains("PACKETARY_TEST_UNSET") && e.contains("github.webhook_secrets[1]"),
        "{e}"
    );
    assert!(matches!(&gh.auth, GithubAuth::Token(t) if t.resolve("github.token").is_err()));
}

#[test]
fn typo_in_key_names_file_line_key_and_fix() {
    let e = err("[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\nmemroy = \"1GiB\"\n");
    assert!(e.contains("test.toml:4"), "{e}");
    assert!(e.contains("targets.t.memroy"), "{e}");
    assert!(e.contains("did you mean `memory`"), "{e}");
}

#[test]
fn typo_in_section_is_caught() {
    let e = err("[biuld]\nparallel = 2\n[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n");
    assert!(
        e.contains("biuld") && e.contains("did you mean `build`"),
        "{e}"
    );
}

#[test]
fn bad_values_name_their_key() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
    assert!(err(&format!("{base}memory = \"lots\"\n")).contains("targets.t.memory"));
    assert!(err(&format!("{base}timeout = \"soon\"\n")).contains("targets.t.timeout"));
    assert!(err(&format!("{base}cpus = 0\n")).contains("targets.t.cpus"));
    let e = err("[targets.t]\nbackend = \"rpmbiuld\"\nimage = \"x\"\n");
    assert!(e.contains("backend") && e.contains("test.toml:2"), "{e}");
    let e = err(&format!("[build]\ndefault_targets = [\"nope\"]\n{base}"));
    assert!(
        e.contains("build.default_targets") && e.contains("use one of: t"),
        "{e}"
    );
    assert!(err("[build]\nparallel = 0\n").contains("build.parallel"));
    assert!(err("").contains("no target"));
    assert!(err("[targets.t\n").contains("test.toml:1"));
}

#[test]
fn unknown_target_lists_known_ones() {
    let c = Config::load(None).expect("defaults");
    let e = c
        .select_targets(&["fedora-99".to_string()])
        .expect_err("unknown")
        .to_string();
    assert!(
        e.contains("no target named `fedora-99`") && e.contains("bookworm-rpmbuild"),
        "{e}"
    );
}

#[test]
fn sizes_and_repos() {
    assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(parse_bytes("2G"), Ok(2 << 30));
    assert_eq!(
        parse_bytes("1K"),
        Err(SizeError::BelowDockerMinimum("1K".into()))
    );
    assert_eq!(
        parse_bytes("12 parsecs"),
        Err(SizeError::UnknownUnit {
            size: "12 parsecs".into(),
            unit: "parsecs".into()
        })
    );
    assert_eq!(
        Repo::parse_arg("local=/srv/repo", 0)
            .map(|r| r.location)
            .ok(),
        Some(RepoLocation::Dir("/srv/repo".into()))
    );
    assert_eq!(
        Repo::parse_arg("https://x/y", 3).map(|r| r.name).ok(),
        Some("extra3".to_string())
    );
    assert!(Repo::new("x", "ftp://x").is_err());
}

#[test]
fn a_file_without_targets_keeps_the_embedded_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let only_server = dir.path().join("server.toml");
    std::fs::write(
        &only_server,
        "[server]\nlisten = \"127.0.0.1:9999\"\n\n[github]\nwebhook_secrets = [\"s3cret-s3cret-s3cret\"]\nrepositories = [\"o/r\"]\ntoken = \"t\"\n",
    )
    .expect("write");
    let c = Config::load(Some(&only_server)).expect("merged over the defaults");
    assert!(c.targets_from_defaults);
    assert_eq!(
        c.targets.keys().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["bookworm-rpmbuild"]
    );
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9999");
    assert!(c.github.is_some());

    // A file with targets replaces the default set.
    let own = dir.path().join("own.toml");
    std::fs::write(
        &own,
        "[targets.mine]\nbackend = \"rpmbuild\"\nimage = \"x/y:1\"\n",
    )
    .expect("write");
    let c = Config::load(Some(&own)).expect("own targets");
    assert!(!c.targets_from_defaults);
    assert_eq!(
        c.targets.keys().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["mine"]
    );
}

#[test]
fn target_macros_are_checked_and_implied_by_mock_dist() {
    let e = err(
        "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"i\"\nmacros = { \"%fedora\" = \"40\" }\n",
    );
    assert!(
        e.contains("targets.t.macros") && e.contains("not an rpm macro name"),
        "{e}"
    );
    let e = err("[targets.t]\nbackend = \"rpmbuild\"\nimage = \"i\"\nuname_r = \"$(id)\"\n");
    assert!(e.contains("targets.t.uname_r"), "{e}");
    let c = Config::parse(
        "[targets.t]\nbackend = \"mock\"\nimage = \"i\"\ndist = \"fc40\"\n\n[targets.e]\nbackend = \"mock\"\nimage = \"i\"\ndist = \"el9\"\nmacros = { dist = \".el9_4\", vendor = \"\" }\n",
        None,
    )
    .expect("parses");
    let t = &c.targets[&TargetName::parse("t").expect("name")];
    assert_eq!(t.rpm_defines(), ["dist .fc40", "fedora 40"]);
    let e = &c.targets[&TargetName::parse("e").expect("name")];
    assert_eq!(e.rpm_defines(), ["dist .el9_4", "rhel 9", "vendor %{nil}"]);
}

#[test]
fn gerrit_section_is_checked() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
    let ok = format!(
        "{base}[gerrit]\nurl = \"https://review.example.org/\"\nuser = \"packetary\"\nhttp_password = {{ env = \"GERRIT_HTTP_PASSWORD\" }}\nssh = \"ssh://packetary@review.example.org\"\nssh_key = {{ file = \"/etc/packetary/gerrit.key\" }}\ngit_url = \"https://review.example.org\"\nprojects = [\"openstack/*\", \"fuel\"]\nwebhook_token = \"t\"\n"
    );
    let c = Config::parse(&ok, Some(Path::new("test.toml"))).expect("valid");
    let g = c.gerrit.expect("[gerrit]");
    assert_eq!(g.url, "https://review.example.org");
    assert_eq!(
        g.ssh,
        Some(GerritSsh {
            user: "packetary".into(),
            host: "review.example.org".into(),
            port: 29418
        })
    );
    assert_eq!(
        (g.label.as_str(), g.success_vote, g.failure_vote),
        ("Verified", 1, -1)
    );
    assert!(g.skip_wip_and_private);
    assert!(matches!(g.http_password, SecretSource::Env(ref v) if v == "GERRIT_HTTP_PASSWORD"));
    // GitHub and Gerrit together.
    // A pinned host key keeps its type and data only (a comment would be written into
    // the pinned `known_hosts` line).
    let pinned = format!("{ok}host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA root@gerrit\"\n");
    let c = Config::parse(&pinned, Some(Path::new("test.toml"))).expect("valid");
    assert_eq!(
        c.gerrit.expect("[gerrit]").host_key.as_deref(),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA")
    );
    let both = format!("{ok}[github]\ntoken = \"x\"\nwebhook_secrets = [\"s\"]\n");
    let c = Config::parse(&both, Some(Path::new("test.toml"))).expect("valid");
    assert!(c.github.is_some() && c.gerrit.is_some());

    for (bad, key, fix) in [
        (
            ok.replace("url = \"https://review", "url = \"ftp://review"),
            "gerrit.url",
            "fix:",
        ),
        (
            ok.replace("ssh = \"ssh://packetary@", "ssh = \"ssh://"),
            "gerrit.ssh",
            "ssh://packetary@",
        ),
        (
            ok.replace(
                "ssh = \"ssh://packetary@review",
                "ssh = \"ssh://-oProxyCommand=x@review",
            ),
            "gerrit.ssh",
            "fix:",
        ),
        (
            ok.replace("git_url = \"https", "git_url = \"gopher"),
            "gerrit.git_url",
            "file:///",
        ),
        (
            ok.replace("\"fuel\"", "\"../x\""),
            "gerrit.projects",
            "prefix",
        ),
        (
            format!("{ok}success_vote = 3\n"),
            "gerrit.success_vote",
            "between -2 and 2",
        ),
        (
            ok.replace("http_password = { env = \"GERRIT_HTTP_PASSWORD\" }\n", ""),
            "gerrit.http_password",
            "HTTP Credentials",
        ),
        (format!("{ok}labels = \"Verified\"\n"), "labels", "label"),
        (
            format!("{ok}host_key = \"ssh-ed25519\"\n"),
            "gerrit.host_key",
            "ssh-keyscan",
        ),
        (
            format!("{ok}host_key = \"@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\"\n"),
            "gerrit.host_key",
            "ssh-keyscan",
        ),
    ] {
        let e = err(&bad);
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains(key), "{key}: {e}");
        assert!(e.contains(fix), "{key}: {e}");
    }
}

/// `repos_url` defaults to `public_url`, and is checked like it.
#[test]
fn repos_url_defaults_to_public_url_and_is_checked() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
    let c = Config::parse(
        &format!("{base}[server]\npublic_url = \"https://p.example.com/\"\n"),
        None,
    )
    .expect("valid");
    assert_eq!(c.server.repos_url, "https://p.example.com");
    let c = Config::parse(
        &format!("{base}[server]\nrepos_url = \"http://172.17.0.1:8080/\"\n"),
        None,
    )
    .expect("valid");
    assert_eq!(c.server.repos_url, "http://172.17.0.1:8080");
    let e = err(&format!("{base}[server]\nrepos_url = \"ftp://x\"\n"));
    assert!(e.contains("server.repos_url"), "{e}");
    assert!(e.contains("test.toml"), "{e}");
    assert!(e.contains("leave it out to use public_url"), "{e}");
}

/// `change_disk_quota` defaults to 10 GiB, "0" turns it off, and a bad size names the key.
#[test]
fn change_disk_quota_is_a_size_or_off() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"x\"\n";
    let c = Config::parse(base, None).expect("valid");
    assert_eq!(c.server.change_disk_quota, Some(10 << 30));
    let c = Config::parse(
        &format!("{base}[server]\nchange_disk_quota = \"2GiB\"\n"),
        None,
    )
    .expect("valid");
    assert_eq!(c.server.change_disk_quota, Some(2 << 30));
    let c = Config::parse(
        &format!("{base}[server]\nchange_disk_quota = \"0\"\n"),
        None,
    )
    .expect("valid");
    assert_eq!(c.server.change_disk_quota, None);
    for bad in ["lots", "10KiB"] {
        let e = err(&format!("{base}[server]\nchange_disk_quota = \"{bad}\"\n"));
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("server.change_disk_quota"), "{e}");
        assert!(e.contains("\"0\" for no quota"), "{e}");
    }
}

/// Issue 21: `[executor]` names the swarm's way back and its registry, each refusal the key
/// and the fix; placement constraints are Swarm's own syntax.
#[test]
fn executor_kinds_and_their_keys() {
    let base = "[targets.t]\nbackend = \"rpmbuild\"\nimage = \"i\"\n";
    let c = Config::parse(base, None).expect("local by default");
    assert_eq!(c.executor, ExecutorConfig::Local);
    let c = Config::parse(
        &format!("[executor]\nkind = \"swarm\"\ncallback_url = \"http://10.0.0.1:8080/\"\nregistry = \"127.0.0.1:5000\"\n{base}constraints = [\"node.labels.rpm==yes\"]\n"),
        None,
    )
    .expect("swarm");
    assert_eq!(
        c.executor,
        ExecutorConfig::Swarm(SwarmConfig {
            callback_url: "http://10.0.0.1:8080".into(),
            registry: "127.0.0.1:5000".into(),
            manager: None,
        })
    );
    let t = c.targets.values().next().expect("t");
    assert_eq!(t.constraints, ["node.labels.rpm==yes"]);
    for (text, key, fix) in [
        ("[executor]\nkind = \"k8s\"\n", "executor.kind", "\"swarm\""),
        ("[executor]\nkind = \"swarm\"\nregistry = \"r:5000\"\n", "executor.callback_url", "http://"),
        ("[executor]\nkind = \"swarm\"\ncallback_url = \"http://u:p@h:1\"\nregistry = \"r\"\n", "executor.callback_url", "token"),
        ("[executor]\nkind = \"swarm\"\ncallback_url = \"http://h:1\"\n", "executor.registry", "127.0.0.1:5000"),
        ("[executor]\nkind = \"swarm\"\ncallback_url = \"http://h:1\"\nregistry = \"https://r\"\n", "executor.registry", "without a scheme"),
        ("[executor]\nregistry = \"r:5000\"\n", "executor.registry", "kind = \"swarm\""),
        ("[executor]\nkind = \"swarm\"\ncallback_url = \"http://h:1\"\nregistry = \"r\"\nmanager = \"/run/d.sock\"\n", "executor.manager", "unix://"),
    ] {
        let e = err(&format!("{text}{base}"));
        assert!(e.contains(key) && e.contains(fix), "{text}: {e}");
    }
    let e = err(&format!("{base}constraints = [\"rpm=yes\"]\n"));
    assert!(
        e.contains("targets.t.constraints[0]") && e.contains("node.labels"),
        "{e}"
    );
}
