#!/usr/bin/python3
"""A live H.264 RTSP test server (GStreamer): rtsp://127.0.0.1:PORT/PATH, optional basic auth.
Run with Debian's /usr/bin/python3 (needs python3-gi). Prints "listening" once it accepts clients."""
import argparse, sys
import gi
gi.require_version('Gst', '1.0')
gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib

p = argparse.ArgumentParser()
p.add_argument('--port', type=int, required=True)
p.add_argument('--path', default='/video')
p.add_argument('--fps', type=int, default=25)
p.add_argument('--size', default='640x480')
p.add_argument('--user')
p.add_argument('--password', default='')
p.add_argument('--codec', choices=['h264', 'jpeg'], default='h264')
a = p.parse_args()
w, h = a.size.split('x')
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address('127.0.0.1')
server.set_service(str(a.port))
factory = GstRtspServer.RTSPMediaFactory()
src = f'videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate={a.fps}/1'
if a.codec == 'jpeg':  # a codec framewire refuses, to test that refusal
    enc = 'videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26'
else:
    enc = (f'x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.fps} '
           '! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1')
factory.set_launch(f'( {src} ! {enc} )')
factory.set_shared(True)
if a.user:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, 'user')
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
    server.set_auth(auth)
    perms = GstRtspServer.RTSPPermissions()
    perms.add_role_from_structure(Gst.Structure.from_string(
        'user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true')[0])
    factory.set_permissions(perms)
server.get_mount_points().add_factory(a.path, factory)
if server.attach(None) == 0:
    print(f'cannot listen on port {a.port} (in use?)', file=sys.stderr)
    sys.exit(1)
print('listening', flush=True)
GLib.MainLoop().run()
