#!/usr/bin/env bash
# Live sound-event tags with the built-in model.
#   demos/live-tagging/run.sh            the microphone, in the terminal UI (q quits, ? help)
#   demos/live-tagging/run.sh CLIP...    each file replayed as if live, one line per hop, then a summary
set -euo pipefail
. "$(dirname "$0")/../common.sh"

if [ $# -eq 0 ]; then
    if "$AJEPA" devices >/dev/null 2>&1 && [ -t 0 ] && [ -t 1 ]; then
        exec "$AJEPA" listen
    fi
    need_esc50
    echo "no microphone or no terminal: replaying three ESC-10 clips instead" >&2
    set -- "$ESC50/audio/4-125929-A-40.flac" "$ESC50/audio/4-181286-A-10.flac" "$ESC50/audio/4-164064-A-1.flac"
fi
for clip in "$@"; do
    echo "== $clip"
    # Without a terminal on stdout, listen prints one plain line per hop: audio time, hop
    # milliseconds, then the top three tags with their smoothed scores.
    "$AJEPA" listen --input "$clip" --fast | sed -n 1,8p
    echo "-- the whole clip, as \`ajepa tag\` sums it up:"
    "$AJEPA" tag "$clip"
done
