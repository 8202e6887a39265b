import type { ComponentChildren } from 'preact';
import { useEffect, useId, useRef } from 'preact/hooks';

/**
 * A modal dialog on the native <dialog> element: the browser traps focus in
 * it, Escape closes it, and focus returns to where it was.
 */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current!;
    if (!dialog.open) dialog.showModal();
    const closed = (): void => props.onClose();
    dialog.addEventListener('close', closed);
    return () => {
      dialog.removeEventListener('close', closed);
      if (dialog.open) dialog.close();
    };
  }, []);
  return (
    <dialog ref={ref} class={props.wide ? 'dialog wide' : 'dialog'} aria-labelledby={titleId}>
      <div class="dialog-head">
        <h2 id={titleId}>{props.title}</h2>
        <button type="button" class="icon" aria-label="Close" onClick={() => ref.current?.close()}>
          ×
        </button>
      </div>
      {props.children}
    </dialog>
  );
}

/** "Are you sure?" with the action named on the button. */
export function Confirm(props: { title: string; message: ComponentChildren; action: string; danger?: boolean; onConfirm: () => Promise<void>; onClose: () => void }) {
  const busy = useRef(false);
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <p>{props.message}</p>
      <div class="actions">
        <button type="button" onClick={props.onClose}>
          Cancel
        </button>
        <button
          type="button"
          class={props.danger ? 'danger' : 'primary'}
          onClick={async () => {
            if (busy.current) return;
            busy.current = true;
            try {
              await props.onConfirm();
            } finally {
              busy.current = false;
            }
          }}
        >
          {props.action}
        </button>
      </div>
    </Dialog>
  );
}
