// The VM's serial console in the browser: xterm.js on the WebSocket
// /api/v1/vms/{vm}/console (binary frames both ways). The session cookie
// goes with the upgrade request, as with every other call.
//
// The first frame is text, {"type":"session","powered_on_at":...}: the
// power-on this console shows. The terminal starts clean there, under a
// dim "VM powered on at" line: nothing of an earlier boot belongs in it
// (that is in the previous log, a download).
//
// The next frame is the history (what the guest printed since this
// power-on, before we connected). xterm answers the queries in it (the
// shell's cursor position request at every prompt), and those answers
// are for prompts long gone: typed into the guest they corrupt its next
// command. mgmtd takes the queries it knows out of the history; for any
// other, nothing xterm says while it replays the history is sent either.

import { useEffect, useRef, useState } from 'preact/hooks';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { seg } from '../api';

type Status = { state: 'connecting' | 'connected' | 'closed'; detail?: string };

/** A text frame of the console's WebSocket (mgmtd's ConsoleEvent). */
type ConsoleEvent = { type: 'session'; powered_on_at: number | null };

/** The line a power-on's console starts with. */
function poweredOn(at: number | null): string {
  const when = at === null ? '' : ` at ${new Date(at * 1000).toLocaleString()}`;
  return `\x1b[2m— VM powered on${when} —\x1b[0m\r\n`;
}

export function SerialConsole({ vm, running }: { vm: string; running: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>({ state: 'connecting' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const el = box.current;
    if (!el || !running) return;
    const term = new Terminal({
      cursorBlink: true,
      fontSize: 13,
      fontFamily: 'DejaVu Sans Mono, Menlo, Consolas, monospace',
      scrollback: 5000,
      theme: { background: '#0f1419', foreground: '#d8dee4' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/api/v1/vms/${seg(vm)}/console`);
    ws.binaryType = 'arraybuffer';
    setStatus({ state: 'connecting' });
    ws.onopen = () => {
      setStatus({ state: 'connected' });
      term.focus();
    };
    let history = true;
    let replaying = false;
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') {
        const event = JSON.parse(e.data) as ConsoleEvent;
        if (event.type === 'session') {
          // A full reset (RIS) written in turn rather than term.reset(),
          // so that it lands after anything still queued for the
          // terminal; the history frame comes next.
          term.write(`\x1bc${poweredOn(event.powered_on_at)}`);
          history = true;
        }
        return;
      }
      const data = new Uint8Array(e.data as ArrayBuffer);
      if (history) {
        history = false;
        replaying = true;
        // Called once xterm has parsed the history, before any later data.
        term.write(data, () => (replaying = false));
      } else {
        term.write(data);
      }
    };
    ws.onclose = (e) => {
      const detail = e.reason || (e.code === 1006 ? 'the connection was refused or lost' : `code ${e.code}`);
      setStatus({ state: 'closed', detail });
      term.write(`\r\n\x1b[33m[console closed: ${detail}]\x1b[0m\r\n`);
    };
    const encoder = new TextEncoder();
    const typed = term.onData((d) => {
      if (!replaying && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d));
    });
    const ro = new ResizeObserver(() => fit.fit());
    ro.observe(el);
    return () => {
      ro.disconnect();
      typed.dispose();
      ws.onclose = null;
      ws.close();
      term.dispose();
    };
  }, [vm, running, attempt]);

  if (!running) return <p class="muted">The VM is not running: power it on to use its console.</p>;
  return (
    <div class="console-wrap">
      <div class="console-bar">
        <span class={`dot dot-${status.state}`} />
        <span data-testid="console-status">{status.state}</span>
        {status.detail && <span class="muted"> — {status.detail}</span>}
        {status.state === 'closed' && (
          <button class="small" onClick={() => setAttempt((n) => n + 1)}>
            Reconnect
          </button>
        )}
        <span class="muted right">Serial console (ttyS0); what you type goes to the guest</span>
        <a class="small" href={`/api/v1/vms/${seg(vm)}/console-logs/current`} download data-testid="current-log" title="Everything the serial console printed since this power-on">
          Log
        </a>
        <a class="small" href={`/api/v1/vms/${seg(vm)}/console-logs/previous`} download data-testid="previous-log" title="The serial console's log of the power-on before this one">
          Previous log
        </a>
      </div>
      <div ref={box} class="console" data-testid="console" />
    </div>
  );
}
