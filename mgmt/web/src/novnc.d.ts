// The part of noVNC's RFB class (@novnc/novnc, docs/API.md) the console
// uses; the package ships no types.
declare module '@novnc/novnc' {
  export default class RFB extends EventTarget {
    constructor(target: HTMLElement, url: string, options?: { shared?: boolean; wsProtocols?: string[] });
    scaleViewport: boolean;
    resizeSession: boolean;
    viewOnly: boolean;
    focusOnClick: boolean;
    background: string;
    sendCtrlAltDel(): void;
    focus(): void;
    disconnect(): void;
  }
}
