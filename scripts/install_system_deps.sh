#!/usr/bin/env bash
# System (Debian) packages the tests need: the real RTSP server (tests/rtsp_server.py), which
# runs under the *system* Python (/usr/bin/python3) because PyGObject/GStreamer come from
# Debian, not PyPI, and the real browser of the report/dashboard tests (tests/browser.py).
# Idempotent: when everything is installed it only runs `dpkg -s`.
#
#   gir1.2-gst-rtsp-server-1.0  GstRtspServer typelib (pulls libgstrtspserver-1.0-0 and the
#                               Gst/GstBase typelibs)
#   python3-gi                  `import gi` for /usr/bin/python3
#   gstreamer1.0-plugins-base   appsrc/appsink (the server feeds each RTSP media itself)
#   gstreamer1.0-plugins-good   qtdemux (mp4), matroskademux (mkv), rtph264pay, rtpbin,
#                               udpsink/udpsrc (all RTSP media need rtpbin and udp)
#   gstreamer1.0-plugins-bad    h264parse (videoparsersbad); Debian's libgstrtspserver-1.0-0
#                               depends on it (and on base/good) anyway
#   chromium                    the headless browser Playwright drives (executable_path): the
#                               wheel's `playwright install` cannot download browsers here
#   mosquitto                   the MQTT broker the MQTT sink's tests publish to (started by
#                               the test on 127.0.0.1, never as a system service)
# filesrc is in libgstreamer1.0-0 (pulled in by all of the above).
# No plugins-ugly/libav: the file's H.264 is served as is, never decoded or re-encoded.
set -euo pipefail

PACKAGES=(
    gir1.2-gst-rtsp-server-1.0
    python3-gi
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    chromium
    mosquitto
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # `dpkg -s` also succeeds for removed-but-not-purged packages, so check the Status line
    # (captured first: `dpkg -s | grep -q` can die of SIGPIPE, which pipefail reports).
    status=$(dpkg -s "$pkg" 2>/dev/null || true)
    if [[ $'\n'"$status" != *$'\nStatus: install ok installed'* ]]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_system_deps: all ${#PACKAGES[@]} packages already installed (${PACKAGES[*]})"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install_system_deps: need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get update -qq >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_system_deps: installed ${missing[*]}"
