// How numbers, money and times read on the page, in the reader's locale.

const DASH = "—";

const usdLarge = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
// Training a small adapter costs cents: four decimals keep a running cost visibly moving.
const usdSmall = new Intl.NumberFormat(undefined, {
  style: "currency",
  currency: "USD",
  minimumFractionDigits: 4,
  maximumFractionDigits: 4,
});
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const percent = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

const toNumber = (value) => (value === null || value === undefined ? null : Number(value));

/** Money in US dollars; amounts arrive as numbers or as numeric strings. */
export function money(value) {
  const amount = toNumber(value);
  if (amount === null || Number.isNaN(amount)) return DASH;
  return (Math.abs(amount) < 1 ? usdSmall : usdLarge).format(amount);
}

/** A loss value with four significant digits. */
export function loss(value) {
  const number = toNumber(value);
  return number === null ? DASH : number.toPrecision(4);
}

export function whole(value) {
  const number = toNumber(value);
  return number === null ? DASH : integer.format(number);
}

export function percentage(value) {
  const number = toNumber(value);
  return number === null ? DASH : `${percent.format(number)}%`;
}

/** An axis tick: a round number without trailing zeros. */
export function tick(value) {
  return String(Number(value.toPrecision(4)));
}

/** A learning rate such as 2e-4, in the notation trainers print. */
export function learningRate(value) {
  const number = toNumber(value);
  if (number === null) return DASH;
  return number === 0 ? "0" : number.toExponential(2);
}

export function timestamp(value) {
  return value ? dateTime.format(new Date(value)) : DASH;
}

export function timeOfDay(value) {
  return value ? clock.format(new Date(value)) : DASH;
}

/** "3 min 20 s", "1 h 5 min", "12 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return DASH;
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return rest > 0 && minutes < 10 ? `${minutes} min ${rest} s` : `${minutes} min`;
  return `${rest} s`;
}

/** "in 2 minutes", "5 seconds ago", relative to `now` (milliseconds). */
export function fromNow(value, now = Date.now()) {
  const seconds = (new Date(value).getTime() - now) / 1000;
  const size = Math.abs(seconds);
  if (size < 60) return relative.format(Math.round(seconds), "second");
  if (size < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (size < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

const sizes = ["byte", "kilobyte", "megabyte", "gigabyte"].map(
  (unit) =>
    new Intl.NumberFormat(undefined, {
      style: "unit",
      unit,
      // "812 bytes" rather than "812 byte"; the larger units read best short.
      unitDisplay: unit === "byte" ? "long" : "short",
      maximumFractionDigits: 1,
    }),
);

/** A file's size in decimal units, in the reader's locale: "812 bytes", "1.2 kB", "54.3 MB". */
export function bytes(value) {
  const number = toNumber(value);
  if (number === null || Number.isNaN(number)) return DASH;
  let size = number;
  let index = 0;
  while (size >= 1000 && index < sizes.length - 1) {
    size /= 1000;
    index += 1;
  }
  return sizes[index].format(size);
}

/** A hyperparameter value as it would be written in a config file. */
export function setting(value) {
  if (value === null || value === undefined) return DASH;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export { DASH };
