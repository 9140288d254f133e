# Sourced on the GPU machine by scripts/gpu-check.sh and scripts/train-model.sh (ROOT set): the
# build dependencies, carried as .deb files in .debs/ (`scripts/gpu-check.sh --fetch`), unpacked
# into a private prefix (never into /), and the carried fixtures restored; then
# `gpu_build BUILD_DIR TARGET...` configures and builds the CUDA backend for sm_90a.
PREFIX=/tmp/elastic-deps
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
for f in "$ROOT"/.debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
for pc in "$PREFIX"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc; do
  [[ -f "$pc" ]] && sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" "$pc"
done
export PATH="$PREFIX/usr/bin:$PATH"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:$PREFIX/usr/share/pkgconfig"

# The fixtures travel gzip'd (--fetch): restore them in place (links point at the restored files).
if [[ -d "$ROOT/.gpu-shared" ]]; then
python3 - "$ROOT/.gpu-shared" <<'PY'
import gzip, pathlib, shutil, sys
for gz in pathlib.Path(sys.argv[1]).rglob("*.safetensors.gz"):
    with gzip.open(gz) as src, open(gz.with_suffix(""), "wb") as dst:
        shutil.copyfileobj(src, dst)
    gz.unlink()
PY
fi

# gpu_build BUILD_DIR TARGET...: configure (once) and build; the log goes to $OUT/build.log.
# No Cairo among the carried .debs (its -dev closure is X11, GLib, FreeType, ...): the GPU build
# draws no figures (ELASTIC_PLOT=OFF makes --routing-map an error naming the path).
gpu_build() {
  local b="$1"
  shift
  # A build folder configured for another source folder (older runs built a copy) starts over.
  [[ -f "$b/CMakeCache.txt" ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$b/CMakeCache.txt" && rm -rf "$b"
  cmake -S "$ROOT" -B "$b" -G Ninja -DELASTIC_CUDA=ON -DELASTIC_TESTS=ON -DELASTIC_PLOT=OFF \
    -DELASTIC_CUDA_GENCODE="-gencode=arch=compute_90a,code=sm_90a" \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr" -DELASTIC_SHARED_DIR="$ROOT/.gpu-shared" > "$OUT/build.log" 2>&1 &&
    ninja -C "$b" -j16 "$@" >> "$OUT/build.log" 2>&1
}
