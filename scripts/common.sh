# Shared set-up for scripts/run, scripts/test and .ci/run: system packages, one target dir.
# Sourced, not executed.

# System packages the app and tests need on Debian/Ubuntu. mesa-vulkan-drivers is lavapipe,
# the Vulkan driver wgpu uses on machines without a GPU (harmless where a GPU driver exists);
# libclang-dev lets nokhwa generate its V4L2 camera bindings at build time; mosquitto is the
# MQTT broker the line I/O tests start on a free loopback port (its system service is not used);
# postgresql is the plant database server: the plant tests make a throw-away cluster with its
# initdb in a temp dir on a free loopback port, as the unprivileged `postgres` user the package
# creates (initdb refuses root), and remove it afterwards.
DI_PACKAGES=(mesa-vulkan-drivers libvulkan1 libclang-dev mosquitto postgresql)

di_missing_packages() {
  local missing=()
  for p in "${DI_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

di_ensure_packages() {
  command -v dpkg-query >/dev/null 2>&1 || return 0   # not Debian: the user knows their drivers
  local missing
  missing=$(di_missing_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "Installing system packages: $missing" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
  else
    echo "Missing system packages: $missing" >&2
    echo "Run:  sudo apt-get install -y $missing" >&2
    exit 1
  fi
}

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# One shared target directory, so the app, the tests and CI reuse each other's builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/defect-inspector-target}"
# Autotuning burn's kernels takes minutes on a CPU rasteriser; minimal is plenty.
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
# Always build the same package selection: a different one changes unified features and
# rebuilds wgpu and burn (see ARCHITECTURE.md).
DI_CARGO_SELECTION=(--workspace --all-targets --locked)
