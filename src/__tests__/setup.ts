/**
 * What jsdom lacks and JupyterLab's packages touch when they load (as JupyterLab's own
 * test utilities provide it), so that the tests can import them.
 */
if (typeof globalThis.DragEvent === 'undefined') {
  class DragEvent extends MouseEvent {
    readonly dataTransfer: DataTransfer | null = null;
  }
  (globalThis as any).DragEvent = DragEvent;
}

if (typeof window.matchMedia !== 'function') {
  window.matchMedia = (query: string) =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addListener: () => undefined,
      removeListener: () => undefined,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      dispatchEvent: () => false
    }) as MediaQueryList;
}

if (!navigator.clipboard) {
  // JupyterLab's clipboard warns on load without one; nothing here copies.
  Object.defineProperty(navigator, 'clipboard', {
    value: {
      readText: async () => '',
      writeText: async () => undefined,
      read: async () => [],
      write: async () => undefined
    }
  });
}

if (typeof window.requestIdleCallback !== 'function') {
  // ReactWidget renders in an idle callback.
  window.requestIdleCallback = callback =>
    window.setTimeout(
      () => callback({ didTimeout: false, timeRemaining: () => 50 }),
      1
    );
  window.cancelIdleCallback = handle => window.clearTimeout(handle);
}

if (typeof HTMLCanvasElement !== 'undefined') {
  // jsdom has no canvas; without this it logs "not implemented" for every try. The charts
  // then draw nothing and say what they hold in their legend (chart.tsx).
  HTMLCanvasElement.prototype.getContext = (() => null) as any;
}

if (typeof globalThis.ResizeObserver === 'undefined') {
  // A main-area tab's toolbar watches its size; jsdom lays nothing out.
  (globalThis as any).ResizeObserver = class {
    observe(): void {}
    unobserve(): void {}
    disconnect(): void {}
  };
}
