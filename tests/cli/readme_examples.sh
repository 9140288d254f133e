#!/usr/bin/env bash
# Runs the README's examples as written (issue 13, item 17): every ```sh block that calls
# $B/elastic is run as one bash script, with `set -e`, from a scratch copy of the repository's
# layout (build/ and scripts/ linked to the real ones, ../shared linked to the shared data), so
# that B=./build/bin and ../shared/... resolve as they do for a reader at the repository root and
# the files the examples write land in the scratch folder. A command that fails, a placeholder
# (MODEL, ELASTIC_CKPT, "...") or a block that calls no real file fails the test.
# Lines with `--backend cuda` run only where nvidia-smi sees a GPU.
#
# usage: readme_examples.sh README BUILD_DIR SHARED_DIR
set -euo pipefail
readme=$(realpath "$1")
build=$(realpath "$2")
shared=$(realpath "$3")
repo=$(dirname "$readme")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/elastic_readme.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/repo/docs/images"
ln -s "$build" "$scratch/repo/build"
ln -s "$repo/scripts" "$scratch/repo/scripts"
ln -s "$shared" "$scratch/shared"

# The ```sh blocks, one file each.
awk -v dir="$scratch" '
  /^```sh$/ { n++; inblock = 1; file = sprintf("%s/block%02d.sh", dir, n); next }
  /^```$/ { inblock = 0; next }
  inblock { print > file }
' "$readme"

have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then have_gpu=1; fi

ran=0
failed=0
prelude="$scratch/prelude.sh"  # variables set by earlier blocks (B=, M=), as a reader's shell keeps them
: >"$prelude"
keep_assignments() { grep -E '^[A-Za-z_][A-Za-z_0-9]*=[^ ]*( +#.*)?$' "$1" >>"$prelude" || true; }
for block in "$scratch"/block*.sh; do
  if ! grep -q '\$B/elastic' "$block"; then  # set-up blocks (build, full test run)
    continue
  fi
  if grep -nE '(^|[ =])(MODEL|ELASTIC_CKPT|OTHER_MODEL)( |$)|"\.\.\."| \.\.\. ' "$block"; then
    echo "README example uses a placeholder instead of a real file (above): $(basename "$block")"
    failed=1
    keep_assignments "$block"
    continue
  fi
  script="$block.run"
  {
    echo 'set -euo pipefail'
    cat "$prelude"
    if [ "$have_gpu" = 0 ]; then
      # Comment out the CUDA lines (a trailing backslash continues the comment too).
      sed -E 's/^(.*--backend cuda.*)$/# skipped, no GPU: \1/' "$block"
    else
      cat "$block"
    fi
  } >"$script"
  echo "=== $(basename "$block")"
  grep -E '\$B/elastic' "$script" | grep -v '^#' | sed 's/^/  /' || true
  if ! (cd "$scratch/repo" && timeout 600 bash "$script" >"$block.out" 2>&1 </dev/null); then
    echo "README example block failed: $(basename "$block")"
    cat "$block"
    echo "--- output (last 40 lines)"
    tail -n 40 "$block.out"
    failed=1
  fi
  keep_assignments "$block"
  ran=$((ran + 1))
done

if [ "$ran" -lt 2 ]; then
  echo "expected at least 2 README blocks with \$B/elastic examples, found $ran"
  exit 1
fi
[ "$failed" = 0 ] && echo "all $ran README example blocks ran"
exit "$failed"
