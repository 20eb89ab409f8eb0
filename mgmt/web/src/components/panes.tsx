// Recent tasks and events: the bottom panes (and, in full, their pages).

import { useState } from 'preact/hooks';
import { clock, duration, time } from '../format';
import { href } from '../router';
import { targetName, useStore } from '../store';
import { StateBadge, TaskProgress, taskTitle } from './progress';

/** A task's or event's target: a link to its VM while the VM exists. */
function Target({ target }: { target: string }) {
  const name = targetName(target);
  return name !== target ? <a href={href({ page: 'vm', vm: name, tab: 'summary' })}>{name}</a> : <span>{target}</span>;
}

export function TaskTable({ limit }: { limit?: number }) {
  const s = useStore();
  const tasks = limit ? s.tasks.slice(0, limit) : s.tasks;
  if (tasks.length === 0) return <p class="muted pad">No tasks yet.</p>;
  return (
    <table class="grid" data-testid="tasks">
      <thead>
        <tr>
          <th>Task</th>
          <th>Target</th>
          <th>Status</th>
          <th class="wide">Progress</th>
          <th>By</th>
          <th>Started</th>
          <th>Took</th>
        </tr>
      </thead>
      <tbody>
        {tasks.map((t) => (
          <tr key={t.id} data-task-kind={t.kind} data-task-state={t.state}>
            <td>{taskTitle(t.kind)}</td>
            <td>
              <Target target={t.target} />
            </td>
            <td>
              <StateBadge state={t.state} />
            </td>
            <td class="wide">{t.state === 'running' || t.state === 'queued' ? <TaskProgress task={t} /> : t.state === 'error' ? <span class="error">{t.error}</span> : <span class="muted">done</span>}</td>
            <td>{t.user}</td>
            <td>{clock(t.started_at ?? t.created_at)}</td>
            <td>{duration(t.started_at, t.finished_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function EventTable({ limit }: { limit?: number }) {
  const s = useStore();
  const events = limit ? s.events.slice(0, limit) : s.events;
  if (events.length === 0) return <p class="muted pad">No events yet.</p>;
  return (
    <table class="grid" data-testid="events">
      <thead>
        <tr>
          <th>Time</th>
          <th>Severity</th>
          <th>Event</th>
          <th>Target</th>
          <th class="wide">Message</th>
          <th>By</th>
        </tr>
      </thead>
      <tbody>
        {events.map((e) => (
          <tr key={e.id} class={`sev-${e.severity}`}>
            <td title={time(e.time)}>{clock(e.time)}</td>
            <td>
              <span class={`sev sev-${e.severity}`}>{e.severity}</span>
            </td>
            <td>{e.kind}</td>
            <td>
              <Target target={e.target} />
            </td>
            <td class="wide">{e.message}</td>
            <td>{e.user ?? ''}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function BottomPanes() {
  const [tab, setTab] = useState<'tasks' | 'events'>('tasks');
  const [open, setOpen] = useState(true);
  const s = useStore();
  const running = s.tasks.filter((t) => t.state === 'running' || t.state === 'queued').length;
  return (
    <section class={`panes${open ? '' : ' closed'}`} aria-label="Recent tasks and events">
      <div class="pane-tabs" role="tablist">
        <button role="tab" aria-selected={tab === 'tasks'} class={tab === 'tasks' ? 'active' : ''} onClick={() => (setTab('tasks'), setOpen(true))}>
          Recent tasks {running > 0 && <span class="count busy">{running}</span>}
        </button>
        <button role="tab" aria-selected={tab === 'events'} class={tab === 'events' ? 'active' : ''} onClick={() => (setTab('events'), setOpen(true))}>
          Events
        </button>
        <a class="more" href={href({ page: tab })}>
          All {tab}
        </a>
        <button class="collapse" aria-label={open ? 'Hide the panes' : 'Show the panes'} onClick={() => setOpen(!open)}>
          {open ? '▾' : '▴'}
        </button>
      </div>
      {open && <div class="pane-body">{tab === 'tasks' ? <TaskTable limit={20} /> : <EventTable limit={50} />}</div>}
    </section>
  );
}
