// The VM's screen in the browser: noVNC on the WebSocket
// /api/v1/vms/{vm}/display, which carries QEMU's VNC server (RFB) through
// mgmtd. The screen scales to the panel; keys typed while it has focus go
// to the guest's keyboard, and Ctrl-Alt-Del has its own button (the
// browser or the desktop would take the real key combination). noVNC is
// loaded when a screen is first shown: it is most of the app's size.

import { useEffect, useRef, useState } from 'preact/hooks';
import type RFB from '@novnc/novnc';
import { seg } from '../api';

type Status = { state: 'connecting' | 'connected' | 'closed'; detail?: string };

export function GraphicalConsole({ vm, running }: { vm: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState<Status>({ state: 'connecting' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const el = box.current;
    if (!el || !running) return;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    setStatus({ state: 'connecting' });
    let gone = false;
    let r: RFB | null = null;
    import('@novnc/novnc')
      .then(({ default: Rfb }) => {
        if (gone) return;
        r = new Rfb(el, `${proto}://${location.host}/api/v1/vms/${seg(vm)}/display`, { shared: true });
        watch(r);
        rfb.current = r;
      })
      .catch((e) => setStatus({ state: 'closed', detail: `the viewer did not load: ${e}` }));
    const watch = (r: RFB) => {
      r.scaleViewport = true;
      r.resizeSession = false;
      r.background = '#0f1419';
      r.addEventListener('connect', () => {
        setStatus({ state: 'connected' });
        r.focus();
      });
      r.addEventListener('disconnect', (e) => {
        const clean = (e as CustomEvent<{ clean: boolean }>).detail?.clean;
        setStatus({ state: 'closed', detail: clean ? 'the display closed' : 'the connection was refused or lost' });
      });
      r.addEventListener('securityfailure', (e) => {
        const reason = (e as CustomEvent<{ reason?: string }>).detail?.reason;
        setStatus({ state: 'closed', detail: `the VNC server refused us${reason ? `: ${reason}` : ''}` });
      });
    };
    return () => {
      gone = true;
      rfb.current = null;
      r?.disconnect();
    };
  }, [vm, running, attempt]);

  if (!running) return <p class="muted">The VM is not running: power it on to see its screen.</p>;
  return (
    <div class="console-wrap">
      <div class="console-bar">
        <span class={`dot dot-${status.state}`} />
        <span data-testid="display-status">{status.state}</span>
        {status.detail && <span class="muted"> — {status.detail}</span>}
        {status.state === 'closed' && (
          <button class="small" onClick={() => setAttempt((n) => n + 1)}>
            Reconnect
          </button>
        )}
        <span class="muted right">Screen (VGA); click it to type into the guest</span>
        <button class="small" disabled={status.state !== 'connected'} title={status.state === 'connected' ? 'Send Ctrl-Alt-Del to the guest' : 'The screen is not connected'} onClick={() => rfb.current?.sendCtrlAltDel()} data-testid="ctrl-alt-del">
          Ctrl-Alt-Del
        </button>
      </div>
      <div ref={box} class="console display" data-testid="display" />
    </div>
  );
}
