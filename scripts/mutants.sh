#!/usr/bin/env bash
# Mutation testing of quench's pure-code crates with cargo-mutants
# (`cargo install cargo-mutants --locked`), and the kill counts per crate.
#
#   scripts/mutants.sh [--shard K/N] [--out DIR] [--retest] [--in-place] CRATE... [-- ARGS]
#
#   --shard K/N  test only mutants i with i % N == K (an even sample over
#                the crate's files; .cargo/mutants.toml sets round-robin).
#   --out DIR    results go to DIR/CRATE/mutants.out (default: mutants.out.d).
#   --retest     test again only the mutants the runs so far in DIR/CRATE
#                left missed or timed out (after adding tests), and print the
#                cumulative figures over the first run's mutants (repeatable).
#                Mutant names carry line numbers, so edits above a survivor
#                make it unmatchable (the script says how many names were not
#                found).
#   --in-place   mutate this tree instead of a copy (use a scratch copy of
#                the repository: files are rewritten while it runs). Without
#                it cargo-mutants copies the tree (not target/) for every
#                crate and builds it from scratch first.
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
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
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
    # State kept in DIR/CRATE across runs: sample.txt (every mutant of the
    # full run), caught_all.txt and unviable_all.txt (cumulative), left.txt
    # (missed or timed out in the latest run).
    if [ "$retest" -eq 1 ]; then
        if [ ! -f "$dir/left.txt" ]; then
            echo "$crate: no previous run in $dir to retest" >&2
            exit 1
        fi
        if [ ! -s "$dir/left.txt" ]; then
            echo "$crate: nothing left to retest"
            k=$(count "$dir/caught_all.txt")
            u=$(count "$dir/unviable_all.txt")
            summary+=("$(row "$crate" $((k + u)) "$k" 0 0 "$u")")
            continue
        fi
        # One anchored, escaped regex per surviving mutant.
        while IFS= read -r name; do
            [ -z "$name" ] && continue
            esc=$(printf '%s' "$name" | sed -e 's/[][\\.+*?(){}|^$]/\\&/g')
            args+=(--re "^${esc}\$")
        done <"$dir/left.txt"
        # Only their files: cargo-mutants 27 pushes struct-field deletions
        # without applying --re (visit.rs, visit_expr_struct), so they are
        # limited by file instead.
        while IFS= read -r file; do
            args+=(--file "$file")
        done < <(cut -d: -f1 "$dir/left.txt" | sort -u)
        wanted=$(count "$dir/left.txt")
        found=$(cargo mutants "${args[@]}" --list "${extra[@]}" 2>/dev/null | grep -Fxc -f "$dir/left.txt" || true)
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
    touch "$o/caught.txt" "$o/missed.txt" "$o/timeout.txt" "$o/unviable.txt"
    if [ "$retest" -eq 1 ]; then
        # Only the retested names count: cargo-mutants 27 does not apply --re
        # to struct-field deletions, so a retest also runs unrelated ones.
        keep="$dir/left.txt"
        grep -Fx -f "$keep" "$o/caught.txt" >>"$dir/caught_all.txt" || true
        grep -Fx -f "$keep" "$o/unviable.txt" >>"$dir/unviable_all.txt" || true
        grep -Fx -f "$keep" "$o/missed.txt" >"$dir/missed_now.txt" || true
        grep -Fx -f "$keep" "$o/timeout.txt" >"$dir/timeout_now.txt" || true
    else
        cat "$o/caught.txt" "$o/missed.txt" "$o/timeout.txt" "$o/unviable.txt" >"$dir/sample.txt"
        cp "$o/caught.txt" "$dir/caught_all.txt"
        cp "$o/unviable.txt" "$dir/unviable_all.txt"
        cp "$o/missed.txt" "$dir/missed_now.txt"
        cp "$o/timeout.txt" "$dir/timeout_now.txt"
    fi
    cat "$dir/missed_now.txt" "$dir/timeout_now.txt" >"$dir/left.txt"
    k=$(count "$dir/caught_all.txt")
    m=$(count "$dir/missed_now.txt")
    t=$(count "$dir/timeout_now.txt")
    u=$(count "$dir/unviable_all.txt")
    summary+=("$(row "$crate" $((k + m + t + u)) "$k" "$m" "$t" "$u")")
done

echo
printf "%-16s %8s %7s %7s %8s %9s %8s\n" crate mutants caught missed timeout unviable killed
for line in "${summary[@]}"; do
    echo "$line"
done
