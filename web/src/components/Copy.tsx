import { useId, useState } from 'preact/hooks';

/** A secret (or link) in a read-only box with a copy button; the value is only in this page's memory. */
export function CopyBox(props: { label: string; value: string; testId?: string }) {
  const id = useId();
  const [copied, setCopied] = useState(false);
  return (
    <div class="copy-box">
      <label for={id}>{props.label}</label>
      <div class="copy-row">
        <input id={id} readOnly value={props.value} data-testid={props.testId} spellcheck={false} autocomplete="off" onFocus={(e) => (e.currentTarget as HTMLInputElement).select()} />
        <button
          type="button"
          aria-label={`Copy ${props.label.toLowerCase()}`}
          onClick={async () => {
            try {
              await navigator.clipboard.writeText(props.value);
              setCopied(true);
            } catch {
              const input = document.getElementById(id) as HTMLInputElement | null;
              input?.select();
              setCopied(document.execCommand?.('copy') ?? false);
            }
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
      </div>
      <p class="sr-only" aria-live="polite">
        {copied ? 'Copied to the clipboard' : ''}
      </p>
    </div>
  );
}
