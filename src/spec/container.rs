//! The query container: the script rpmspec runs in, and running it within bounds.

use super::{
    SpecQuery, BATCH_DEADLINE, BATCH_OUTPUT_CAP, QUERY_CPU_SECS, QUERY_FILE_KIB, QUERY_TIMEOUT,
    SHOWN_ERR, SHOWN_OUT,
};
use crate::config::Target;
use crate::docker::{ContainerGuard, ContainerSpec, Engine, InfraError};
use crate::executor::backend::sh_quote;

/// Runs the query container with its output capped and a deadline; the container is
/// removed on every way out, a drop of this future included. Returns the exit code, the output, and whether it was cut
/// short (then the answers that did not arrive are not cached).
pub(super) async fn run_bounded(
    engine: &Engine,
    spec: &ContainerSpec,
) -> Result<(i64, Vec<u8>, bool), InfraError> {
    // Armed before create: a query dropped from here on (a cancelled plan) still removes.
    let guard = ContainerGuard::new(engine, spec.name.clone());
    let id = engine.create(spec).await?;
    let result = async {
        let mut stream = engine.start_attached(&id).await?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
        let mut cut = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.next_chunk()).await {
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    if out.len() + chunk.len() > BATCH_OUTPUT_CAP {
                        cut = true;
                        break;
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        if cut {
            return Ok((-1, out, true));
        }
        let code = engine.exit_code(&stream.exit()).await?;
        Ok((code, out, false))
    }
    .await;
    let removed = guard.remove().await;
    let r = result?;
    removed?;
    Ok(r)
}

/// The `uname` specs see: the target's kernel release for `-r`, the real one otherwise.
fn uname_wrapper(release: &str) -> String {
    format!(
        "#!/bin/bash\nif [ \"$*\" = -r ]; then echo {}; else exec /bin/uname \"$@\"; fi\n",
        sh_quote(release)
    )
}

/// Two rpmspec calls per spec: the source package's header (name, version, Source/Patch
/// names and its Requires, which are the BuildRequires), then, only when that parsed, the
/// binary packages' Provides. Each
/// call's status, stdout and stderr come back tagged and truncated. rpmspec runs as
/// `nobody` (so that it cannot write to this script's output), under `timeout` and
/// `ulimit`. `%(...)` runs under `/bin/sh`, which is made bash in this throwaway container,
/// as on the distributions specs are written for.
pub(super) fn script(target: &Target, batch: &[&SpecQuery]) -> String {
    let mut s = format!(
        "set -u\ncommand -v rpmspec >/dev/null || {{ echo 'rpmspec is not installed in this image'; exit 2; }}\n\
         command -v timeout >/dev/null || {{ echo 'timeout (coreutils) is not installed in this image'; exit 2; }}\n\
         [ -x /bin/bash ] && ln -sf bash /bin/sh 2>/dev/null\n\
         asuser=''\ncommand -v setpriv >/dev/null && asuser='setpriv --reuid=65534 --regid=65534 --clear-groups'\n\
         q() {{ i=$1; sec=$2; shift 2; ( ulimit -t {cpu}; ulimit -f {fsize}; exec timeout -k 2 {t} $asuser rpmspec \"$@\" ) </dev/null >/tmp/o 2>/tmp/e; rc=$?; \
         echo \"@@ $i $sec $rc\"; head -c {out} /tmp/o | sed 's/^/O /'; echo; head -c {err} /tmp/e | sed 's/^/E /'; echo; \
         [ \"$(stat -c %s /tmp/o)\" -gt {out} ] && echo \"@T $i $sec\"; return $rc; }}\n",
        cpu = QUERY_CPU_SECS,
        fsize = QUERY_FILE_KIB,
        t = QUERY_TIMEOUT.as_secs(),
        out = SHOWN_OUT,
        err = SHOWN_ERR,
    );
    if let Some(r) = &target.uname_r {
        s.push_str(&format!(
            "mkdir -p /usr/local/bin && printf '%s' {} > /usr/local/bin/uname && chmod 755 /usr/local/bin/uname\n",
            sh_quote(&uname_wrapper(r))
        ));
    }
    let mut defines = vec![
        format!("_target_cpu {}", target.arch),
        "_buildshell /bin/bash".to_string(),
    ];
    defines.extend(target.rpm_defines());
    for (i, q) in batch.iter().enumerate() {
        let dir = format!("/q/{i}");
        let mut args = vec![
            "--define".to_string(),
            sh_quote(&format!("_sourcedir {dir}")),
        ];
        for d in &defines {
            args.push("--define".into());
            args.push(sh_quote(d));
        }
        let spec = sh_quote(&format!("{dir}/{}", q.spec_file));
        let a = args.join(" ");
        s.push_str(&format!(
            "q {i} nevr {a} -q --srpm --qf '%{{NAME}}\\t%{{EPOCH}}\\t%{{VERSION}}\\t%{{RELEASE}}\\n[S %{{SOURCE}}\\n][P %{{PATCH}}\\n][R %{{REQUIRENAME}} %{{REQUIREFLAGS:depflags}} %{{REQUIREVERSION}}\\n]' {spec} && \
             q {i} prov {a} -q --provides {spec}\n"
        ));
    }
    s.push_str("exit 0\n");
    s
}
