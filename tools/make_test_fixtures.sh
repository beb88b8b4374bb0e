#!/usr/bin/env bash
# Regenerates the small audio clips under tests/fixtures/audio/ (used by tests/test_audio.py
# and tests/test_frontend.py). Needs espeak-ng and sox (`apt-get install -y espeak-ng sox`).
#
# Deterministic: espeak-ng synthesis is deterministic, sox runs in repeatable mode (-R) with
# dither off (-D) so the 22.05 kHz -> 16 kHz conversion gives the same samples every time.
#
#   zh.flac          Mandarin speech (espeak-ng -v cmn), 16 kHz mono 16-bit, <= 3 s
#   en.flac          English speech (espeak-ng -v en-us), 16 kHz mono 16-bit, <= 3 s
#   odd.flac         12345 samples of en (odd length, not a multiple of the 160-sample shift)
#   short_20ms.wav   320 samples of zh speech: shorter than one 25 ms (400-sample) frame
#   stereo_8k.wav    8 kHz, 2 channels (left en, right zh), 1 s, 16-bit WAV
#   truncated.wav    en as 16-bit WAV with its last half of bytes cut off (header says more)
#   empty.wav        valid 16 kHz WAV header with 0 samples
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/tests/fixtures/audio"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sox_() { sox -R -D "$@"; }

espeak-ng -v cmn -s 170 -w "$tmp/zh22.wav" "今天天气很好。"
espeak-ng -v en-us -s 170 -w "$tmp/en22.wav" "Hello world, this is a short test."

sox_ "$tmp/zh22.wav" -r 16000 -c 1 -b 16 "$tmp/zh.wav"
sox_ "$tmp/en22.wav" -r 16000 -c 1 -b 16 "$tmp/en.wav"
for f in zh en; do
  n=$(soxi -s "$tmp/$f.wav")
  if [ "$n" -gt 48000 ]; then echo "$f clip is $n samples (> 3 s): shorten its text" >&2; exit 1; fi
done

sox_ "$tmp/zh.wav" "$out/zh.flac"
sox_ "$tmp/en.wav" "$out/en.flac"
sox_ "$tmp/en.wav" "$out/odd.flac" trim 0s 12345s
sox_ "$tmp/zh.wav" "$out/short_20ms.wav" trim 8000s 320s
sox_ -M "$tmp/en.wav" "$tmp/zh.wav" -r 8000 -c 2 -b 16 "$out/stereo_8k.wav" trim 0 1
sox_ -V1 -n -r 16000 -c 1 -b 16 "$out/empty.wav" trim 0s 0s

# Cut the byte stream in the middle of the sample data; the header still claims the full size.
bytes=$(stat -c %s "$tmp/en.wav")
head -c $((bytes / 2)) "$tmp/en.wav" > "$out/truncated.wav"

ls -l "$out"
