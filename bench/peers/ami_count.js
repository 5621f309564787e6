#!/usr/bin/env node
// Minimal harness around one npm AMI client library: connect to a fake AMI
// server (bench's amisim), log in, count events until N arrived, print one
// JSON line {lib, events, seconds}. Counting starts at the first event, so
// connect and login time are not measured.
'use strict';

const [lib, port, user, secret, want] = process.argv.slice(2);
if (!lib || !port || !want) {
  console.error('usage: ami_count.js yana|ami-io|asterisk-manager PORT USER SECRET EVENTS');
  process.exit(2);
}
const target = Number(want);
let n = 0;
let t0 = 0n;
let c0 = null;

function onEvent () {
  if (n === 0) { t0 = process.hrtime.bigint(); c0 = process.cpuUsage(); }
  n++;
  if (n === target) {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    console.log(JSON.stringify({ lib, events: n, seconds: s, cpu_seconds: (c.user + c.system) / 1e6 }));
    process.exit(0);
  }
}

// A library that stalls must not hang the benchmark forever.
setTimeout(() => {
  const s = t0 ? Number(process.hrtime.bigint() - t0) / 1e9 : 0;
  console.log(JSON.stringify({ lib, events: n, seconds: s, timeout: true }));
  process.exit(1);
}, 600 * 1000).unref();

if (lib === 'yana') {
  const AMI = require('yana');
  const ami = new AMI({ host: '127.0.0.1', port: Number(port), login: user, password: secret, events: true });
  ami.on('event', onEvent);
  ami.on('error', (e) => { console.error('yana:', String(e)); process.exit(1); });
  ami.connect();
} else if (lib === 'ami-io') {
  const AmiIo = require('ami-io');
  const c = new AmiIo.Client({ host: '127.0.0.1', port: Number(port), login: user, password: secret, logger: new AmiIo.SilentLogger() });
  c.on('event', onEvent);
  c.on('incorrectLogin', () => { console.error('ami-io: login failed'); process.exit(1); });
  c.connect();
} else if (lib === 'asterisk-manager') {
  const ami = require('asterisk-manager')(Number(port), '127.0.0.1', user, secret, true);
  ami.on('managerevent', onEvent);
  ami.on('error', (e) => { console.error('asterisk-manager:', String(e)); process.exit(1); });
} else {
  console.error('unknown library ' + lib);
  process.exit(2);
}
