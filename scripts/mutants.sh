#!/usr/bin/env bash
# Mutation testing of quench's pure-code crates with cargo-mutants
# (`cargo install cargo-mutants --locked`), and the kill counts per crate.
#
#   scripts/mutants.sh [--shard K/N] [--out DIR] [--retest] [--in-place] CRATE... [-- ARGS]
#
#   --shard K/N  test only mutants i with i % N == K (an even sample over
#                the crate's files; .cargo/mutants.toml sets round-robin).
#   --out DIR    results go to DIR/CRATE/mutants.out (default: mutants.out.d).
#   --retest     test again only the mutants the previous run in DIR/CRATE
#                left missed or timed out (after adding tests), and print the
#                merged figures: the previous run's caught and unviable
#                mutants plus this run's outcomes. Mutant names carry line
#                numbers, so edits above a survivor make it unmatchable (the
#                script says how many names were not found).
#   --in-place   mutate this tree instead of a copy (use a scratch copy of
#                the repository: files are rewritten while it runs).
#   -- ARGS      passed to cargo mutants as is (e.g. --file, -j 2).
#
# Prints, per crate: mutants, caught, missed, timeout, unviable and the
# share killed = caught / (caught + missed + timeout); unviable mutants (do
# not compile) are counted but left out of the share.
#
# Not part of scripts/test.sh or CI: a full run of the three crates is
# about 4,000 mutants, hours on two cores. Configuration (which tests run,
# exclusions and why) is in .cargo/mutants.toml.
set -euo pipefail

shard=""
out="mutants.out.d"
retest=0
inplace=()
crates=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --shard) shard="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --retest) retest=1; shift ;;
    --in-place) inplace=(--in-place); shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) crates+=("$1"); shift ;;
    esac
done
if [ ${#crates[@]} -eq 0 ]; then
    echo "usage: scripts/mutants.sh [--shard K/N] [--out DIR] [--retest] [--in-place] CRATE... [-- ARGS]" >&2
    exit 2
fi
if ! command -v cargo-mutants >/dev/null; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
    exit 1
fi

# Count the lines of a mutants.out list (0 if absent).
count() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }

# One summary row from the figures: crate mutants caught missed timeout unviable.
row() {
    awk -v c="$1" -v n="$2" -v k="$3" -v m="$4" -v t="$5" -v u="$6" 'BEGIN {
        d = k + m + t
        share = d > 0 ? sprintf("%.1f%%", 100 * k / d) : "n/a"
        printf "%-16s %8d %7d %7d %8d %9d %8s\n", c, n, k, m, t, u, share
    }'
}

summary=()
for crate in "${crates[@]}"; do
    dir="$out/$crate"
    mkdir -p "$dir"
    args=(-p "$crate" -o "$dir" "${inplace[@]}")
    [ -n "$shard" ] && args+=(--shard "$shard")
    prev_caught=0
    prev_unviable=0
    if [ "$retest" -eq 1 ]; then
        prev="$dir/mutants.out"
        if [ ! -d "$prev" ]; then
            echo "$crate: no previous run in $prev to retest" >&2
            exit 1
        fi
        # Keep the run being retested; cargo-mutants would overwrite
        # mutants.out.old on the next run.
        rm -rf "$dir/retested.out"
        cp -a "$prev" "$dir/retested.out"
        prev_caught=$(count "$prev/caught.txt")
        prev_unviable=$(count "$prev/unviable.txt")
        names=$(cat "$prev/missed.txt" "$prev/timeout.txt" 2>/dev/null || true)
        if [ -z "$names" ]; then
            echo "$crate: nothing left to retest"
            summary+=("$(row "$crate" $((prev_caught + prev_unviable)) "$prev_caught" 0 0 "$prev_unviable")")
            continue
        fi
        printf '%s\n' "$names" | grep . >"$dir/retest_names.txt"
        # One anchored, escaped regex per surviving mutant.
        while IFS= read -r name; do
            [ -z "$name" ] && continue
            esc=$(printf '%s' "$name" | sed -e 's/[][\\.+*?(){}|^$]/\\&/g')
            args+=(--re "^${esc}\$")
        done <<<"$names"
        wanted=$(printf '%s\n' "$names" | grep -c .)
        found=$(cargo mutants "${args[@]}" --list "${extra[@]}" 2>/dev/null | grep -Fxc -f "$dir/retest_names.txt" || true)
        echo "$crate: retesting $found of $wanted surviving mutants (names not found: $((wanted - found)))"
    fi
    set +e
    cargo mutants "${args[@]}" "${extra[@]}"
    rc=$?
    set -e
    # 0: all caught, 2: some missed, 3: some timed out; anything else (1 usage,
    # 4 baseline tests failed, ...) means the figures are not valid.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
        echo "$crate: cargo mutants failed with exit code $rc" >&2
        exit 1
    fi
    o="$dir/mutants.out"
    if [ "$retest" -eq 1 ]; then
        # cargo-mutants 27 does not apply --re to struct-field deletions, so
        # the run may include mutants outside the retested set: count only
        # the retested names.
        only() { if [ -f "$1" ]; then grep -Fxc -f "$dir/retest_names.txt" "$1" || true; else echo 0; fi; }
        k=$(only "$o/caught.txt")
        m=$(only "$o/missed.txt")
        t=$(only "$o/timeout.txt")
        u=$(only "$o/unviable.txt")
    else
        k=$(count "$o/caught.txt")
        m=$(count "$o/missed.txt")
        t=$(count "$o/timeout.txt")
        u=$(count "$o/unviable.txt")
    fi
    k=$((k + prev_caught))
    u=$((u + prev_unviable))
    summary+=("$(row "$crate" $((k + m + t + u)) "$k" "$m" "$t" "$u")")
done

echo
printf "%-16s %8s %7s %7s %8s %9s %8s\n" crate mutants caught missed timeout unviable killed
for line in "${summary[@]}"; do
    echo "$line"
done
