# The rpmbuild backend's dependency phase (bash, root, the only phase with network).
# Prepended by rpmbuild.rs: OUT_DIR, NEVR_FILE, MISSING_MARK and `install_from_repos`
# (dnf from the target's repositories, or a note that there are none).
#
# BuildRequires that rpm cannot satisfy are installed from the target's repositories first
# (dnf), then from Debian (apt): each Fedora name is mapped to the Debian package shipping
# it, installed, and declared to rpm by a generated package whose Provides say exactly what
# was installed, with versions. What has no Debian counterpart is reported as missing.
set -u
# The network: asked for when first needed, given back before the phase ends, whatever its
# outcome. The local executor's daemon connects the container on a marker line carrying
# `$net_token` (the driver's secret, see backend::driver); a Swarm job's agent, which holds
# the capability to switch links, reads requests from its FIFO (root's only), see
# executor::swarm.
net=""
net_fifo=/run/packetary/net
# A link is up: an interface but loopback with IFF_UP (a disconnected container has none).
has_network() { local i f; for i in /sys/class/net/*; do [ "${i##*/}" = lo ] && continue; f=$(<"$i/flags"); (( f & 1 )) && return 0; done; return 1; }
online() {
  [ -z "$net" ] || return 0
  if [ -p "$net_fifo" ]; then
    net=1
    echo on > "$net_fifo"
  elif [ -z "${net_token:-}" ]; then echo "packetary: this build's dependency phase has no network"; return 1
  else
    net=1
    echo "@@packetary-net-$net_token on"
  fi
  for _ in $(seq 600); do has_network && return 0; sleep 0.1; done
  echo "packetary: the network was not given within 60s"; return 1
}
offline() {
  [ -n "$net" ] || return 0
  if [ -p "$net_fifo" ]; then echo off > "$net_fifo"; else echo "@@packetary-net off"; fi
  for _ in $(seq 600); do has_network || return 0; sleep 0.1; done
  echo "packetary: the network was not taken away within 60s"; return 1
}
trap 'rc=$?; offline || rc=1; exit $rc' EXIT
set -- "$OUT_DIR"/*.src.rpm
srpm=$1
reqs=()
{ read -r _ || true; while IFS= read -r r; do case "$r" in rpmlib\(*|"") ;; *) reqs+=("$r");; esac; done; } < "$OUT_DIR/$NEVR_FILE"

# Fills `missing` with the requirements rpm's database does not satisfy (bash builtins and
# one rpm call: the common case, nothing to install, stays cheap).
# rpm -q --whatprovides takes names only: versions are rpmbuild's to check in the build.
declare -A req_of=()
names=()
for r in "${reqs[@]}"; do req_of[${r%% *}]=$r; names+=("${r%% *}"); done
check_missing() {
  missing=()
  [ "${#names[@]}" -gt 0 ] || return 0
  local n
  while IFS= read -r line; do
    n=""
    case "$line" in
      "no package provides "*) n=${line#no package provides };;
      # A path rpm's database does not own: absent, or there from Debian but undeclared.
      "error: file "*": No such file or directory") n=${line#error: file }; n=${n%: No such file or directory};;
      "file "*" is not owned by any package") n=${line#file }; n=${n% is not owned by any package};;
    esac
    [ -n "$n" ] && missing+=("${req_of[$n]:-$n}")
  # `--`: the names come from a file the build user wrote, and may look like options.
  done < <(rpm -q --whatprovides -- "${names[@]}" 2>&1)
}
check_missing
if [ "${#missing[@]}" -eq 0 ]; then echo "packetary: all build dependencies are installed"; exit 0; fi
printf 'packetary: to install: %s\n' "${missing[@]}"
install_from_repos
check_missing
[ "${#missing[@]}" -eq 0 ] && exit 0

# --- Debian ---
# Fedora names whose Debian package is not found by the rules below.
declare -A debian_name=(
  [zlib-devel]=zlib1g-dev [ncurses-devel]=libncurses-dev [python3-devel]=python3-dev
  [openssl-devel]=libssl-dev [glib2-devel]=libglib2.0-dev [gtk3-devel]=libgtk-3-dev
  [gtk2-devel]=libgtk2.0-dev [libcurl-devel]=libcurl4-openssl-dev [curl-devel]=libcurl4-openssl-dev
  [bzip2-devel]=libbz2-dev [xz-devel]=liblzma-dev [readline-devel]=libreadline-dev
  [pcre-devel]=libpcre3-dev [pcre2-devel]=libpcre2-dev [libuuid-devel]=uuid-dev
  [libattr-devel]=libattr1-dev [libacl-devel]=libacl1-dev [expat-devel]=libexpat1-dev
  [sqlite-devel]=libsqlite3-dev [libjpeg-turbo-devel]=libjpeg-dev [libjpeg-devel]=libjpeg-dev
  [gettext-devel]=gettext [systemd-devel]=libsystemd-dev [dbus-devel]=libdbus-1-dev
  [libselinux-devel]=libselinux1-dev [elfutils-libelf-devel]=libelf-dev [elfutils-devel]=libdw-dev
  [libusb1-devel]=libusb-1.0-0-dev [libusbx-devel]=libusb-1.0-0-dev [freetype-devel]=libfreetype-dev
  [fontconfig-devel]=libfontconfig-dev [lua-devel]=liblua5.4-dev [ruby-devel]=ruby-dev
  [perl-devel]=libperl-dev [glibc-static]=libc6-dev [libstdc++-static]=libstdc++-12-dev
  [openldap-devel]=libldap-dev [krb5-devel]=libkrb5-dev [pam-devel]=libpam0g-dev
  [libxslt-devel]=libxslt1-dev [giflib-devel]=libgif-dev [SDL-devel]=libsdl1.2-dev
  [mesa-libGL-devel]=libgl-dev [mesa-libEGL-devel]=libegl-dev [libxcb-devel]=libxcb1-dev
  [oniguruma-devel]=libonig-dev [qt5-qtbase-devel]=qtbase5-dev [file-devel]=libmagic-dev [libssh2-devel]=libssh2-1-dev
  [gnutls-devel]=libgnutls28-dev [libgcrypt-devel]=libgcrypt20-dev [nettle-devel]=nettle-dev
  [libnl3-devel]=libnl-3-dev [libtool-ltdl-devel]=libltdl-dev [check-devel]=check
  [cunit-devel]=libcunit1-dev [gtest-devel]=libgtest-dev [boost-devel]=libboost-dev
  [pkgconfig]=pkgconf [pkgconf-pkg-config]=pkgconf [gcc-gfortran]=gfortran [git-core]=git
  [glibc-langpack-en]=locales [glibc-all-langpacks]=locales [ncurses]=ncurses-bin
  [procps-ng]=procps [xz]=xz-utils [which]=debianutils [gnupg2]=gnupg [vim-common]=xxd
  [python3-pip]=python3-pip [perl-podlators]=perl [perl-Pod-Html]=perl [perl-Test-Simple]=perl
  [perl-ExtUtils-MakeMaker]=perl [perl-macros]=perl [libappstream-glib]=appstream-util
)
stamp=$(cat /usr/share/packetary/image-stamp 2>/dev/null || echo none)
# The cache volume (see `cache_volume` in rpmbuild.rs), per image build: lists, archives and
# resolved names outlive the container, so a second build downloads nothing.
cache=/var/cache/packetary/$stamp
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/resolved" "$cache/provides"
apt_opts=(-o "Dir::State::Lists=$cache/lists" -o "Dir::Cache::Archives=$cache/archives"
  -o "Dir::Cache::pkgcache=$cache/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$cache/srcpkgcache.bin"
  -o APT::Install-Recommends=false -o APT::Install-Suggests=false -o Acquire::Retries=3 -q)
# The cache is shared by the target's builds: one apt at a time downloads or updates it.
locked() { flock -w 600 "$cache/lock" "$@"; }
update_lists() {
  online || return 1
  echo "packetary: apt-get update"
  locked apt-get "${apt_opts[@]}" update >/dev/null || { echo "packetary: apt-get update failed"; return 1; }
}
fresh_lists() {
  if [ -z "$(find "$cache/lists" -maxdepth 1 -name '*_Packages' -mmin -360 -print -quit)" ]; then
    update_lists || true
  fi
}

# The Debian names a Fedora capability may be shipped as, most likely first.
candidates() {
  local cap=$1 name base lower p
  name=${cap%% *}
  case "$name" in
    pkgconfig\(*\))
      base=${name#pkgconfig(}; base=${base%)}
      files "/usr/lib/x86_64-linux-gnu/pkgconfig/$base.pc" "/usr/lib/pkgconfig/$base.pc" "/usr/share/pkgconfig/$base.pc"
      return ;;
    /*)
      case "$name" in
        /usr/*) files "$name" "${name#/usr}" ;;
        *) files "$name" "/usr$name" ;;
      esac
      return ;;
    perl\(*\))
      base=${name#perl(}; base=${base%)}; lower=${base,,}
      # A module perl already has (core modules) is installed: its package says so.
      if [[ $base =~ ^[A-Za-z0-9_:]+$ ]] && perl -M"$base" -e 1 2>/dev/null; then echo perl-base; fi
      echo "lib${lower//::/-}-perl"
      return ;;
    python3dist\(*\)|python3.*dist\(*\))
      base=${name#*(}; base=${base%)}; lower=${base,,}
      echo "python3-${lower//_/-} python3-${lower#python-}"
      return ;;
  esac
  if [ -n "${debian_name[$name]:-}" ]; then echo "${debian_name[$name]}"; return; fi
  lower=${name,,}
  case "$lower" in
    lib*-devel) echo "${lower%-devel}-dev" ;;
    *-devel) base=${lower%-devel}; echo "lib$base-dev $base-dev" ;;
    *-static) base=${lower%-static}; echo "lib$base-dev $base-dev" ;;
    *) echo "$lower" ;;
  esac
}
# Packages shipping any of these paths, from the mirror's Contents index (see the Dockerfile).
files() {
  local f
  for f in "$@"; do
    grep -m1 -F "$f"$'\t' /usr/share/packetary/contents.idx | while IFS=$'\t' read -r path pkgs; do
      [ "$path" = "$f" ] && echo "${pkgs//,/ }"
    done
  done
}

key=$(printf '%s\n' "${missing[@]}" | sort | sha256sum | cut -c1-32)
pkgs=()
declare -A chosen=()
if [ -s "$cache/resolved/$key" ]; then
  # Same unmet BuildRequires as an earlier build of this image: same Debian packages.
  while IFS=$'\t' read -r cap pkg; do chosen[$cap]=$pkg; done < "$cache/resolved/$key"
else
  fresh_lists
  declare -A cands=()
  all=()
  for cap in "${missing[@]}"; do
    # Names go into a generated spec: only what a package name or path can hold.
    # (Nor an option of apt's: no leading dash.)
    if ! [[ ${cap%% *} =~ ^[A-Za-z0-9/][A-Za-z0-9._+/:()@-]*$ ]]; then cands[$cap]=""; continue; fi
    cands[$cap]=$(candidates "$cap" | tr '\n' ' ')
    # shellcheck disable=SC2206
    all+=(${cands[$cap]})
  done
  declare -A known=()
  if [ "${#all[@]}" -gt 0 ]; then
    while read -r p; do known[$p]=1; done < <(apt-cache "${apt_opts[@]}" --no-all-versions show "${all[@]}" 2>/dev/null | sed -n 's/^Package: //p')
  fi
  for cap in "${missing[@]}"; do
    for p in ${cands[$cap]}; do
      if [ -n "${known[$p]:-}" ]; then chosen[$cap]=$p; break; fi
    done
    if [ -z "${chosen[$cap]:-}" ]; then
      echo "packetary: no Debian package provides $cap (tried: ${cands[$cap]:-none})"
    fi
  done
fi
for cap in "${missing[@]}"; do [ -n "${chosen[$cap]:-}" ] && pkgs+=("${chosen[$cap]}"); done
# pkg-config itself, for pkgconfig() requirements: Fedora's -devel packages pull it in.
for cap in "${missing[@]}"; do case "$cap" in pkgconfig\(*) [ -n "${chosen[$cap]:-}" ] && pkgs+=(pkgconf);; esac; done

if [ "${#pkgs[@]}" -gt 0 ]; then
  before=$(dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort)
  printf 'packetary: from Debian: %s\n' "${pkgs[@]}" | sort -u
  # Same set as an earlier build of this image: dpkg alone installs the archives apt chose
  # then (apt's start-up, reading all of Debian's lists, is most of a small install).
  debs=()
  if [ -s "$cache/resolved/$key.debs" ]; then
    while IFS= read -r f; do [ -f "$cache/archives/$f" ] && debs+=("$cache/archives/$f") || { debs=(); break; }; done < "$cache/resolved/$key.debs"
  fi
  if [ "${#debs[@]}" -gt 0 ] && dpkg -i "${debs[@]}" > /tmp/packetary-apt.log 2>&1; then
    :
  elif fresh_lists
    # The download takes the cache's lock; the unpacking is this container's own.
    online
    if ! locked apt-get "${apt_opts[@]}" -y --download-only install "${pkgs[@]}" >/dev/null; then
      update_lists && locked apt-get "${apt_opts[@]}" -y --download-only install "${pkgs[@]}" >/dev/null
    fi
    # Reading the shared archives needs no lock of apt's: another build may be downloading.
    apt-get "${apt_opts[@]}" -o Debug::NoLocking=true -y --no-download install "${pkgs[@]}" > /tmp/packetary-apt.log 2>&1; then
    for cap in "${missing[@]}"; do [ -n "${chosen[$cap]:-}" ] && printf '%s\t%s\n' "$cap" "${chosen[$cap]}"; done > "$cache/resolved/$key.tmp" \
      && mv -f "$cache/resolved/$key.tmp" "$cache/resolved/$key"
    comm -13 <(printf '%s\n' "$before") <(dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort) \
      | while IFS=$'\t' read -r p v a; do v=${v//:/%3a}; f="${p}_${v}_${a}.deb"; [ -f "$cache/archives/$f" ] && echo "$f"; done > "$cache/resolved/$key.debs.tmp" \
      && mv -f "$cache/resolved/$key.debs.tmp" "$cache/resolved/$key.debs"
  else
    grep -E '^(E:|  )' /tmp/packetary-apt.log | head -n 20
  fi
  # Declare to rpm what was installed: each new Debian package under its own name, each
  # mapped capability, and every pkg-config module the new packages ship, with versions.
  rpmver() { local v=${1#*:}; v=${v%-*}; v=${v//[^A-Za-z0-9._+~^]/.}; printf '%s' "${v:-0}"; }
  declare -A newver=()
  while IFS=$'\t' read -r p v _; do newver[$p]=$v; done < <(comm -13 <(printf '%s\n' "$before") <(dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort))
  provides=()
  for p in "${!newver[@]}"; do
    provides+=("$p = $(rpmver "${newver[$p]}")")
    while IFS= read -r pc; do
      v=$(sed -n 's/^Version:[[:space:]]*//p' "$pc" | head -n1)
      m=${pc##*/}; m=${m%.pc}
      case "$v" in *'$'*|"") provides+=("pkgconfig($m)");; *) provides+=("pkgconfig($m) = $(rpmver "$v")");; esac
    done < <(dpkg -L "$p" | grep -E '/pkgconfig/[^/]+\.pc$')
  done
  for cap in "${missing[@]}"; do
    p=${chosen[$cap]:-}
    [ -n "$p" ] || continue
    if dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$'; then
      name=${cap%% *}
      case "$name" in
        /*) provides+=("$name") ;;
        pkgconfig\(*) ;;
        *) provides+=("$name = $(rpmver "$(dpkg-query -W -f '${Version}' "$p")")") ;;
      esac
    fi
  done
  if [ "${#provides[@]}" -gt 0 ]; then
    list=$(printf '%s\n' "${provides[@]}" | sort -u)
    vkey=$(printf '%s\n' "$list" | sha256sum | cut -c1-32)
    rpmfile=$cache/provides/$vkey.rpm
    if [ ! -s "$rpmfile" ]; then
      d=$(mktemp -d)
      {
        printf 'Name: packetary-debian-deps-%s\nVersion: 1\nRelease: 1\nSummary: Debian packages installed for a build\nLicense: MIT\nBuildArch: noarch\n' "$vkey"
        printf 'Provides: %s\n' "${provides[@]}" | sort -u
        printf '%%description\nDeclares to rpm the Debian packages that Packetary installed.\n%%files\n'
      } > "$d/p.spec"
      if rpmbuild -bb --quiet --define "_topdir $d" --define '_build_name_fmt p.rpm' "$d/p.spec" >/dev/null 2>&1; then
        mv -f "$d/RPMS/p.rpm" "$rpmfile.tmp" && mv -f "$rpmfile.tmp" "$rpmfile"
      else
        echo "packetary: could not make the package declaring the Debian packages to rpm"
      fi
      rm -rf "$d"
    fi
    [ -s "$rpmfile" ] && rpm -i --force-debian --nodeps --replacepkgs "$rpmfile"
  fi
fi

check_missing
for dep in "${missing[@]}"; do echo "$MISSING_MARK$dep"; done
[ "${#missing[@]}" -eq 0 ]
